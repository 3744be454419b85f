"""`benchsuite export --osv DIR`: one OSV record per case, with the declared (bisected) ranges."""
from __future__ import annotations

import sys
from pathlib import Path

from ..harness.report import UsageError
from ..publish import osv
from . import _options


def register(sub) -> None:
    p = sub.add_parser("export", help="the catalogue in another format: --osv DIR writes one OSV record per case")
    p.add_argument("--osv", required=True, metavar="DIR", help="the folder to write x_benchsuite-<id>.json records in")
    _options.cases_dir(p)
    _options.selection(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return export_osv(Path(args.osv), _options.resolve_cases_dir(args.cases_dir), args.keyword, args.tag)


def export_osv(folder: Path, cases_dir: Path, keyword: str | None, tags: list[str]) -> int:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--osv {folder}: exists and is not a folder")
    cases, broken = _options.load_selected(cases_dir, keyword, tags)
    if not cases and not broken:
        raise UsageError("no case matches the selection (-k/--tag)")
    written = osv.export([(c.metadata(), p) for c, p in cases], folder)
    for cid, error in broken:
        print(f"{cid}: BROKEN CASE FILE, not exported: {error}", file=sys.stderr)
    note = f"; {len(broken)} broken case file(s)" if broken else ""
    print(f"wrote {len(written)} OSV record(s) to {folder}{note}")
    return 1 if broken else 0
