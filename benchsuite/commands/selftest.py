"""`benchsuite selftest`: the scanner on planted values, on every backend present."""
from __future__ import annotations

import sys

from .. import strictjson
from ..common import check_output, envelope, write_atomic
from ..selftest import render_selftest, run_selftest
from . import _options


def register(sub) -> None:
    p = sub.add_parser("selftest", help="the scanner on planted values, on every backend present (CPU core, "
                                        "CUDA kernel per GPU, torch), each against a NumPy reference")
    _options.json_output(p, optional_path=True, help="as JSON, to PATH or (no PATH, or -) to stdout")
    p.add_argument("--quick", action="store_true", help="the small probe of the first-use self-check only")
    p.set_defaults(func=run)


def run(args) -> int:
    return main(json_path=args.json, quick=args.quick)


def main(json_path: str | None = None, quick: bool = False) -> int:
    check_output(json_path, "--json")
    result = run_selftest(quick=quick)
    if json_path:
        write_atomic(json_path, strictjson.dumps(envelope("selftest", {**result}),
                                                 indent=2))
        if json_path != "-":
            print(f"wrote {json_path}", file=sys.stderr)
    if json_path != "-":
        print(render_selftest(result))
    return 0 if result["ok"] else 1
