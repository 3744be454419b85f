"""`benchsuite refresh`: keep the catalogue true as the libraries move.

Finds the releases of transformers, peft, trl and accelerate published since the last recorded matrix (the
newest version of each package in its cells, or ``since``), runs the catalogue in a date-coherent
environment for each new release (its companions resolved as of its upload time, as ``--with`` does),
bisects every case whose status there contradicts its declaration (between the last recorded release and
the new one) and, with ``write``, rewrites those declared ranges, merges the new columns into the recorded
matrix and regenerates the catalogue page and the site. What finished is kept when interrupted, a release
that cannot be installed is reported and the others go on.
"""
from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

from packaging.version import Version

from . import strictjson
from .harness import bisect as bisect_mod
from .harness.discover import load_case
from .harness.envs import EnvError, index_versions, release_date
from .harness.executor import run_local
from .harness.report import write_atomic

PACKAGES = ("transformers", "peft", "trl", "accelerate")


def recorded_versions(matrix: dict) -> dict[str, Version]:
    """The newest version of each package among a matrix's environments (its pinned columns)."""
    out: dict[str, Version] = {}
    for cell in matrix.get("cells") or []:
        for pin in cell.get("pins") or []:
            name, _, ver = pin.partition("==")
            if ver:
                v = Version(ver)
                out[name] = max(out.get(name, v), v)
    return out


def new_releases(packages: list[str], recorded: dict[str, Version], since: datetime.datetime | None = None,
                 versions_of=index_versions, date_of=release_date, log=print) -> list[tuple[str, str]]:
    """[(package, version)] released after the recorded version (or uploaded after ``since``), oldest first
    per package. A package the matrix never pinned contributes its newest release. A package whose releases
    cannot be listed is reported and left out."""
    found = []
    for package in packages:
        try:
            versions = versions_of(package)
        except EnvError as exc:
            log(f"{package}: releases cannot be listed, left out: {exc}")
            continue
        if since is not None:
            recent = [v for v in versions[-15:] if (date_of(package, v) or since) > since]
        elif package in recorded:
            recent = [v for v in versions if Version(v) > recorded[package]]
        else:
            recent = versions[-1:]
        found += [(package, v) for v in recent]
    return found


def _probe_range(package: str, recorded: dict[str, Version], new: str) -> list[str]:
    lo = str(recorded[package]) if package in recorded else None
    return bisect_mod.released_versions(package, lo, new)


def _bisect_contradiction(path: Path, package: str, recorded: dict[str, Version], new: str, cell: dict,
                          timeout: float, write: bool, log) -> dict:
    case = load_case(path)
    versions = _probe_range(package, recorded, new)
    if len(versions) < 2:
        return {"case": case.id, "bisected": False, "why": f"no earlier recorded {package} release to bisect from"}
    prober = bisect_mod.Prober(path, package, [], timeout, log)
    prober.record(new, prober.entry(cell), cell.get("duration_s") or 0.0)  # just run: not probed again
    result = bisect_mod.bisect(prober, versions)
    fix = bisect_mod.correction(case.affected, package, result, prober.seen, versions[0], versions[-1])
    out = {"case": case.id, "bisected": True, "range": [versions[0], versions[-1]], "result": result,
           "suggested_affected": fix, "seen": prober.seen}
    if write and fix:
        out["written"] = bisect_mod.write_range(path, case.affected, package, fix, result, log)
    return out


def _summary_line(package: str, version: str, cells: list[dict], bisected: list[dict]) -> str:
    failed = "environment could not be built: "
    if cells and all(str(c.get("reason") or "").startswith(failed) for c in cells):
        return f"{package} {version}: cannot be installed: {cells[0]['reason'][len(failed):][:200]}"
    agree = sum(1 for c in cells if c["agrees"])
    line = f"{package} {version}: {agree} of {len(cells)} as declared"
    for b in bisected:
        if b.get("suggested_affected"):
            line += (f"; {b['case']}: range {'written' if b.get('written') else 'suggested'} "
                     f"{package}{b['suggested_affected']}")
        else:
            line += f"; {b['case']}: contradicts its declaration ({b.get('why') or 'no range found'})"
    return line


def refresh(paths: list[Path], releases: list[tuple[str, str]], recorded: dict[str, Version], *, jobs: int,
            timeout: float, write: bool, log=print, on_progress=None, runner=None) -> dict:
    """Run the cases in one environment per new release, bisect the contradictions; returns
    {"releases": [{package, version, cells, contradictions, bisected, line}], "changelog": [lines]}.
    ``on_progress(doc)`` is called after every release (so an interrupted refresh keeps what finished);
    ``runner`` runs one environment's cells (default: the local matrix runner; a Ray one can be given)."""
    doc: dict = {"releases": [], "changelog": []}
    by_id = {p.stem: p for p in paths}
    for package, version in releases:
        t0 = time.perf_counter()
        pins = [f"{package}=={version}"]
        cells = (runner or _local_runner)(paths, pins, jobs=jobs, timeout=timeout, log=log)
        contradictions = [c for c in cells if not c["agrees"] and c["status"] in bisect_mod.USABLE]
        bisected = []
        for c in contradictions:
            log(f"{package} {version}: {c['case']} is {c['status']}, declared {c['expected']}: bisecting {package}")
            bisected.append(_bisect_contradiction(by_id[c["case"]], package, recorded, version, c, timeout, write,
                                                  log))
        line = _summary_line(package, version, cells, bisected)
        doc["releases"].append({"package": package, "version": version, "cells": cells,
                                "contradictions": [c["case"] for c in contradictions], "bisected": bisected,
                                "line": line, "duration_s": round(time.perf_counter() - t0, 1)})
        doc["changelog"].append(line)
        log(line)
        if on_progress:
            on_progress(doc)
    return doc


def _local_runner(paths: list[Path], pins: list[str], *, jobs: int, timeout: float, log) -> list[dict]:
    return run_local(paths, [pins], jobs=jobs, timeout=timeout, log=log)


def merge_into_matrix(matrix_path: Path, doc: dict) -> dict:
    """The recorded matrix with each refreshed release's cells added: a (case, release) cell already there is
    replaced, the other cases of that column are kept (a refresh of some cases leaves the rest as they were)."""
    matrix: dict[str, Any] = (json.loads(matrix_path.read_text()) if matrix_path.is_file()
                              else {"kind": "matrix", "cells": []})
    for rel in doc["releases"]:
        label = f"{rel['package']}=={rel['version']}"
        fresh = {c["case"] for c in rel["cells"]}
        matrix["cells"] = [c for c in matrix.get("cells", []) if not (c.get("env") == label and c.get("case") in fresh)]
        matrix["cells"] += rel["cells"]
        envs = matrix.setdefault("environments", [])
        if label not in envs:
            envs.append(label)
    matrix["refreshed"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_atomic(matrix_path, strictjson.dumps(matrix, indent=2, default=str))
    return matrix
