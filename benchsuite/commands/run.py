"""`benchsuite run`: run cases, each in a fresh process, and give a verdict per case."""
from __future__ import annotations

from ..harness import run as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("run", help="run cases, each in a fresh process, and give a verdict per case")
    p.add_argument("ids", nargs="*", metavar="ID", help="case ids (default: the whole catalogue)")
    _options.cases_dir(p)
    _options.selection(p)
    p.add_argument("--last-failed", "--lf", dest="last_failed", default=None, metavar="JSON",
                   help="rerun the cases that did not agree with their declaration in this earlier --json result")
    p.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first case that disagrees")
    p.add_argument("--maxfail", type=_options.positive_int, default=None, metavar="N",
                   help="stop after N cases that disagree")
    _options.json_output(p)
    _options.junit_output(p)
    _options.markdown_output(p, help="a Markdown table (- for stdout)")
    _options.timeout(p)
    _options.jobs(p)
    _options.pins(p, help="run in a cached virtualenv with this requirement, e.g. transformers==4.57.6 or "
                          "'transformers>=4.57,<5' (resolved to one release; one per package; repeatable for "
                          "other packages); torch stays the current one")
    _options.repeat(p)
    _options.model(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(cases_dir=_options.resolve_cases_dir(args.cases_dir), ids=args.ids,
                       last_failed=args.last_failed, keyword=args.keyword, tags=args.tag, model=args.model,
                       with_=args.with_, json_path=args.json, junit_path=args.junit, markdown_path=args.markdown,
                       jobs=args.jobs, timeout=args.timeout, exitfirst=args.exitfirst, maxfail=args.maxfail,
                       repeat=args.repeat)
