"""`benchsuite site DIR`: the catalogue as a static site to open in a browser."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..harness.report import UsageError
from ..publish import site
from . import _options


def register(sub) -> None:
    p = sub.add_parser("site", help="the catalogue as a static site (case x release grid, a page per case)")
    p.add_argument("dir", metavar="DIR", help="the folder to write index.html, style.css and cases/ in")
    p.add_argument("--matrix", action="append", default=[], metavar="JSON",
                   help="matrix results to show (repeatable; default: docs/results/matrix-all.json)")
    p.add_argument("--run", default=None, metavar="JSON",
                   help="a run result whose evidence the case pages show (default: docs/results/catalogue-run.json)")
    _options.cases_dir(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return build(Path(args.dir), _options.resolve_cases_dir(args.cases_dir), [Path(m) for m in args.matrix],
                 Path(args.run) if args.run else None)


def _defaults(cases_dir: Path) -> tuple[list[Path], Path | None]:
    results = cases_dir.resolve().parent / "docs" / "results"
    merged = results / "matrix-all.json"  # the catalogue page's matrix (refresh --write adds to it)
    matrices = [merged] if merged.is_file() else sorted(m for m in results.glob("matrix-*.json")
                                                        if m.name != "matrix-seeds.json")
    run = results / "catalogue-run.json"
    return matrices, run if run.is_file() else None


def build(folder: Path, cases_dir: Path, matrices: list[Path], run: Path | None) -> int:
    for m in [*matrices, *([run] if run else [])]:
        if not m.is_file():
            raise UsageError(f"{m}: no such file")
    default_matrices, default_run = _defaults(cases_dir)  # each default on its own (refresh --write names the matrix)
    matrices, run = matrices or default_matrices, run or default_run
    cases, broken = _options.load_selected(cases_dir)
    for cid, error in broken:
        print(f"{cid}: BROKEN CASE FILE, left out: {error}", file=sys.stderr)
    n = site.write(folder, [c for c, _ in cases], matrices, run, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"wrote {folder / 'index.html'} and {n} case page(s) from {len(matrices)} matrix file(s)"
          + (f" and {run}" if run else ""))
    return 1 if broken else 0
