"""`benchsuite info`: versions, the extension's build facts and the device."""
from __future__ import annotations

import sys

from .. import strictjson
from ..common import check_output, envelope, write_atomic
from ..info import collect, render
from . import _options


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, the extension's build facts and the device")
    _options.json_output(p, optional_path=True, help="as JSON, to PATH or (no PATH, or -) to stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    return main(json_path=args.json)


def main(json_path: str | None = None) -> int:
    check_output(json_path, "--json")
    info = collect()
    if json_path:
        write_atomic(json_path, strictjson.dumps(envelope("info", {**info}), indent=2))
        if json_path != "-":
            print(f"wrote {json_path}", file=sys.stderr)
    else:
        print(render(info))
    return 0
