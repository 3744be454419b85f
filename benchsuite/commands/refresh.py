"""`benchsuite refresh`: judge the catalogue on the releases published since the last recorded matrix."""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

from .. import refresh as engine
from .. import strictjson
from ..common import envelope
from ..harness import catalogue_doc, executor, rayexec
from ..harness.discover import default_cases_dir
from ..harness.report import UsageError, check_output, write_atomic
from . import _options
from . import site as site_command


def register(sub) -> None:
    p = sub.add_parser("refresh", help="run the catalogue on every release of transformers/peft/trl/accelerate "
                                       "newer than the recorded matrix; bisect what changed; --write records it")
    p.add_argument("--since", default=None, metavar="DATE",
                   help="releases uploaded after this date (YYYY-MM-DD) instead of those newer than the matrix")
    p.add_argument("--package", action="append", default=[], metavar="NAME",
                   help=f"a package to follow (repeatable; default: {', '.join(engine.PACKAGES)})")
    p.add_argument("--matrix", default=None, metavar="JSON",
                   help="the recorded matrix (default: docs/results/matrix-all.json beside the catalogue)")
    p.add_argument("--write", action="store_true",
                   help="rewrite the ranges bisect corrects, add the new columns to the matrix, regenerate "
                        "docs/catalogue.md and the site")
    p.add_argument("--site", default=None, metavar="DIR", help="with --write: where the site goes (default docs/site)")
    p.add_argument("--json", default=None, metavar="PATH", help="the result as JSON (- for stdout)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per case, in seconds (default 300)")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="cases at a time (default 2)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="local|ADDRESS",
                   help="run each release's cells as Ray tasks (as matrix --ray)")
    p.add_argument("--release", action="append", default=[], metavar="NAME==VERSION",
                   help="judge these releases instead of looking for new ones (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="only list the new releases")
    _options.cases_dir(p)
    _options.selection(p)
    p.set_defaults(func=run)


def _since(text: str | None) -> datetime.datetime | None:
    if text is None:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise UsageError(f"--since {text!r}: a date as YYYY-MM-DD") from None


def run(args) -> int:
    if args.jobs < 1 or args.timeout <= 0:
        raise UsageError("--jobs must be at least 1 and --timeout positive")
    check_output(args.json, "--json")
    cases_dir = _options.resolve_cases_dir(args.cases_dir)
    root = cases_dir.resolve().parent
    matrix = Path(args.matrix) if args.matrix else root / "docs" / "results" / "matrix-all.json"
    if args.matrix and not matrix.is_file():
        raise UsageError(f"--matrix {matrix}: no such file")
    packages = [p.lower() for p in args.package] or list(engine.PACKAGES)
    return main(cases_dir, matrix, packages, since=_since(args.since), write=args.write,
                site=Path(args.site) if args.site else root / "docs" / "site", json_path=args.json,
                jobs=args.jobs, timeout=args.timeout, ray=args.ray, dry_run=args.dry_run, keyword=args.keyword,
                tags=args.tag, only=[_release(r) for r in args.release])


def _release(text: str) -> tuple[str, str]:
    name, sep, ver = text.partition("==")
    if not sep or not name.strip() or not ver.strip():
        raise UsageError(f"--release {text!r}: NAME==VERSION, e.g. transformers==5.25.0")
    return name.strip().lower(), ver.strip()


def main(cases_dir: Path, matrix: Path, packages: list[str], *, since, write: bool, site: Path, json_path,
         jobs: int, timeout: float, ray, dry_run: bool, keyword, tags, only=()) -> int:
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    recorded_matrix = json.loads(matrix.read_text()) if matrix.is_file() else {}
    recorded = engine.recorded_versions(recorded_matrix)
    releases = list(only) or engine.new_releases(packages, recorded, since, log=log)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(recorded.items())) or "none"
    log(f"recorded matrix {matrix.name}: newest {shown}; new: "
        + (", ".join(f"{p} {v}" for p, v in releases) or "nothing"))
    cases, broken = _options.load_selected(cases_dir, keyword, tags)
    for cid, error in broken:
        log(f"{cid}: BROKEN CASE FILE, left out: {error}")
    paths = [p for _, p in cases]
    meta = envelope("refresh", {"matrix": str(matrix),
            "recorded": {k: str(v) for k, v in recorded.items()}, "since": since.isoformat() if since else None,
            "new_releases": [f"{p}=={v}" for p, v in releases], "cases": len(paths)})
    if dry_run or not releases:
        if json_path:
            write_atomic(json_path, strictjson.dumps({**meta, "releases": [], "changelog": []}))
        print("no new release" if not releases else "\n".join(f"{p} {v}" for p, v in releases))
        return 0
    t0 = time.perf_counter()

    def save(doc: dict) -> None:
        if json_path and json_path != "-":
            elapsed = round(time.perf_counter() - t0, 1)
            write_atomic(json_path, strictjson.dumps({**meta, **doc, "duration_s": elapsed}))

    doc: dict = {"releases": [], "changelog": []}
    interrupted = False
    cluster = None

    def progress(d: dict) -> None:
        doc.update(d)
        save(d)

    try:
        runner = None
        if ray:
            cluster = rayexec.Cluster(ray, log=log)
            runner = _ray_runner(cluster)
        doc = engine.refresh(paths, releases, recorded, jobs=jobs, timeout=timeout, write=write, log=log,
                             on_progress=progress, runner=runner)
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted: the releases that finished are kept")
    finally:
        if cluster is not None:
            cluster.close()
    meta["interrupted"] = interrupted
    if write and doc["releases"]:
        _record(cases_dir, matrix, site, doc, log)
    save(doc)
    if json_path == "-":
        write_atomic("-", strictjson.dumps({**meta, **doc}))
    print("\n".join(doc["changelog"]) or "nothing finished")
    if interrupted:
        return 130
    return 0 if all(not r["contradictions"] for r in doc["releases"]) else 1


def _record(cases_dir: Path, matrix: Path, site: Path, doc: dict, log) -> None:
    engine.merge_into_matrix(matrix, doc)
    log(f"--write: {matrix} has the new column(s)")
    if cases_dir.resolve() == default_cases_dir().resolve():  # the catalogue's own page
        cases, _ = _options.load_selected(cases_dir)
        page = cases_dir.resolve().parent / "docs" / "catalogue.md"
        catalogue_doc.write([c.metadata() for c, _ in cases], str(page), str(matrix))
        log(f"--write: regenerated {page}")
    site_command.build(site, cases_dir, [matrix], None)


def _ray_runner(cluster):
    def runner(paths, pins, *, jobs, timeout, log):
        cells: list[dict] = []
        executor.run_on_ray(paths, [pins], cluster, timeout=timeout, repeat=1, log=log, on_cell=lambda c: None,
                            cells=cells, executor=cluster.info())
        return cells
    return runner
