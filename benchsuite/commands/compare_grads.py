"""`benchsuite compare-grads A B`: do two runs' gradients match (signature files of watch --signature)?"""
from __future__ import annotations

from ..watch import signatures as engine


def register(sub) -> None:
    p = sub.add_parser("compare-grads", help="do two runs' gradients match? Compare two signature files of "
                                             "benchsuite watch --signature, parameter by parameter")
    engine.add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(args)
