"""`benchsuite matrix`: run cases across pinned environments, a case x environment table."""
from __future__ import annotations

from ..harness import matrix as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("matrix", help="run cases across pinned environments: a case x environment table")
    p.add_argument("ids", nargs="*", metavar="ID", help="case ids (default: the whole catalogue)")
    _options.selection(p)
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="REQ",
                   help="versions of a package: NAME==V1,V2,... or one requirement such as 'NAME>=A,<B' "
                        "(resolved to one release); repeatable, environments are the combinations")
    _options.cases_dir(p)
    _options.json_output(p)
    _options.markdown_output(p)
    _options.junit_output(p, help="JUnit XML for CI, a testsuite per environment (- for stdout)")
    _options.timeout(p)
    _options.jobs(p, default=None, note="; not with --ray")
    _options.repeat(p)
    _options.ray(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(cases_dir=_options.resolve_cases_dir(args.cases_dir), ids=args.ids, with_=args.with_,
                       keyword=args.keyword, tags=args.tag, json_path=args.json, markdown_path=args.markdown,
                       junit_path=args.junit, timeout=args.timeout, jobs=args.jobs, repeat=args.repeat,
                       ray=args.ray, ray_workers=args.ray_workers)
