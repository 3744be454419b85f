"""`benchsuite compare A.json B.json`: what changed between two run, matrix or bench results."""
from __future__ import annotations

from .. import compare as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("compare", help="what changed between two run, matrix or bench JSON results")
    p.add_argument("a", metavar="A.json", help="the earlier result")
    p.add_argument("b", metavar="B.json", help="the later result")
    p.add_argument("--threshold", type=float, default=0.10, metavar="FRACTION",
                   help="bench: report figures that moved by more than this fraction (default 0.10)")
    _options.json_output(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(a_path=args.a, b_path=args.b, threshold=args.threshold, json_path=args.json)
