"""`benchsuite watch -- CMD ...`: run a training command with the gradient scanner attached."""
from __future__ import annotations

from ..watch import cli as engine


def register(sub) -> None:
    p = sub.add_parser("watch", help="run a training command with the gradient scanner attached: watch -- CMD ...")
    engine.add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(engine.WatchOptions.from_args(args))
