"""`benchsuite doctor`: from an environment, an error, a log or a watch report to the known cases."""
from __future__ import annotations

from .. import doctor as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("doctor", help="the known failures that apply to these versions (or --with pins), "
                                      "their symptoms and fixes; --run checks them there")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="REQ",
                   help="judge a cached pinned environment (as `run --with`), e.g. transformers==4.57.6; "
                        "one per package, repeatable")
    p.add_argument("--run", action="store_true",
                   help="run the cases that apply there: which reproduce, which fixes work")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="with --run: on this local checkpoint folder (cases that support it)")
    _options.cases_dir(p)
    _options.selection(p, tags=False)
    p.add_argument("--json", default=None, metavar="PATH", help="the result as JSON (- for stdout)")
    p.add_argument("--markdown", default=None, metavar="PATH", help="the result as Markdown (- for stdout)")
    p.add_argument("--error", default=None, metavar="TEXT",
                   help="an error message or a whole pasted traceback (- reads stdin; a file's path reads the file): "
                        "the cases whose declared exception, message or warning explain it, best first")
    p.add_argument("--log", default=None, metavar="PATH",
                   help="a trainer_state.json (or its checkpoint folder), a Trainer/TRL console log or a watch --json "
                        "report: the cases that explain the signs it shows (NaN or flat loss, grad_norm 0, lr 0, no "
                        "eval_loss, ...), best first")
    p.add_argument("--all", action="store_true",
                   help="show every match (with --error/--log), or every case that applies one per line (without)")
    _options.timeout(p, per="case with --run")
    _options.jobs(p, note="; with --run")
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(cases_dir=_options.resolve_cases_dir(args.cases_dir), with_=args.with_, run_cases=args.run,
                       model=args.model, keyword=args.keyword, json_path=args.json, markdown_path=args.markdown,
                       error_text=args.error, log_path=args.log, show_all=args.all, timeout=args.timeout,
                       jobs=args.jobs)
