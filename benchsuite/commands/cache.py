"""`benchsuite cache list|prune`: the cache of pinned environments."""
from __future__ import annotations

from ..harness import cache as engine
from . import _options


def register(sub) -> None:
    p = sub.add_parser("cache", help="the cache of pinned environments: list or prune")
    p.add_argument("action", choices=["list", "prune"], help="list: show the cache; prune: remove environments")
    p.add_argument("--all", action="store_true", help="prune: every environment, not only unfinished ones")
    p.add_argument("--older-than", type=_options.days, default=None, metavar="DAYS",
                   help="prune: environments not used for this many days")
    _options.json_output(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return engine.main(action=args.action, json_path=args.json, show_all=args.all, older_than=args.older_than)
