"""`benchsuite compare-grads A B`: do two runs' gradients match (signature files of watch --signature)?"""
from __future__ import annotations

from ..watch import signatures as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("compare-grads", help="do two runs' gradients match? Compare two signature files of "
                                             "benchsuite watch --signature, parameter by parameter")
    p.add_argument("a", metavar="A.json", help="the reference run's signature file (benchsuite watch --signature)")
    p.add_argument("b", metavar="B.json", help="the run compared with it")
    tol = p.add_mutually_exclusive_group()
    tol.add_argument("--rtol", type=float, default=None, metavar="X",
                     help="a parameter differs when its relative error ||g_b - g_a|| / ||g_a|| is above X")
    tol.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None,
                     help="B's precision, for the bound: fp32 1e-3 (the default), fp16 0.02, bf16 0.1")
    _options.json_output(p, help="the comparison as JSON (- for stdout)")
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(a=args.a, b=args.b, rtol=args.rtol, precision=args.precision, json_path=args.json)
