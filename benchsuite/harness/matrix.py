"""`benchsuite matrix`: the cases in several pinned environments, as a case x environment table."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .. import strictjson
from ..common import UsageError, check_outputs, envelope, write_atomic
from . import executor, rayexec
from .discover import resolve, select
from .envs import expand  # noqa: F401 (the --with parser for matrices; re-exported)
from .executor import env_label

SHORT = {"reproduced": "REPRO", "not-reproduced": "no", "fix-failed": "FIX-FAILED", "error": "ERROR", "flaky": "FLAKY",
         "timeout": "TIMEOUT", "crashed": "CRASHED", "skipped": "skip"}


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return "-"
    text = SHORT.get(cell["status"], cell["status"])
    return text + (" (!)" if not cell["agrees"] else "")


def _grid(cells: list[dict]):
    cases = list(dict.fromkeys(c["case"] for c in cells))
    envs = list(dict.fromkeys(c["env"] for c in cells))
    index = {(c["case"], c["env"]): c for c in cells}
    return cases, envs, index


def table(cells: list[dict]) -> str:
    cases, envs, index = _grid(cells)
    w0 = max([4] + [len(c) for c in cases])
    widths = [max(len(e), 10) for e in envs]
    lines = ["case".ljust(w0) + "  " + "  ".join(e.ljust(w) for e, w in zip(envs, widths))]
    for case in cases:
        lines.append(case.ljust(w0) + "  " + "  ".join(_cell_text(index.get((case, e))).ljust(w)
                                                       for e, w in zip(envs, widths)))
    lines.append("REPRO = reproduced, no = not reproduced, (!) = differs from the case's declared affected versions")
    return "\n".join(lines)


def markdown(cells: list[dict], title: str = "benchsuite matrix", executor: dict | None = None) -> str:
    cases, envs, index = _grid(cells)
    lines = [f"# {title}", "", "| case | " + " | ".join(f"`{e}`" for e in envs) + " |",
             "|---|" + "---|" * len(envs)]
    for case in cases:
        row = []
        for e in envs:
            c = index.get((case, e))
            differs = " **(differs from declared)**" if c is not None and not c["agrees"] else ""
            row.append("-" if c is None else c["status"] + differs)
        lines.append(f"| `{case}` | " + " | ".join(row) + " |")
    notes = [c for c in cells if c.get("reason") and c["status"] != "skipped"]
    if notes:
        lines += ["", "Notes:", ""] + [f"- `{c['case']}` in `{c['env']}`: {c['reason']}" for c in notes]
    versions = {c["env"]: c.get("environment") for c in cells if c.get("environment")}
    if versions:
        lines += ["", "Environments:", ""] + [
            f"- `{e}`: " + ", ".join(f"{k} {v}" for k, v in (env or {}).items() if v) for e, env in versions.items()]
    if executor and executor.get("kind") == "ray":
        where = "a local cluster" if executor.get("local_cluster") else executor.get("address")
        lines += ["", f"Run on Ray {executor.get('ray_version')} ({where}: "
                      f"{executor.get('nodes')} node(s), {executor.get('cpus')} CPU(s), "
                      f"{executor.get('gpus')} GPU(s))."]
    return "\n".join(lines) + "\n"


def junit(cells: list[dict], meta: dict) -> str:
    """JUnit XML: one testsuite per environment, one testcase per cell (as `run --junit` for one)."""
    cases, envs, index = _grid(cells)
    out = ['<?xml version="1.0" encoding="utf-8"?>', "<testsuites>"]
    for e in envs:
        row = [index[(c, e)] for c in cases if (c, e) in index]
        errors = sum(1 for c in row if c["status"] in ("error", "crashed", "timeout"))
        skipped = sum(1 for c in row if c["status"] == "skipped")
        failures = sum(1 for c in row if not c["agrees"] and c["status"] not in ("error", "crashed", "timeout"))
        total = sum(c.get("duration_s") or 0 for c in row)
        out.append(f'  <testsuite name={quoteattr("benchsuite matrix " + e)} tests="{len(row)}" failures="{failures}" '
                   f'errors="{errors}" skipped="{skipped}" time="{total:.3f}">')
        for c in row:
            out.append(f'    <testcase classname={quoteattr("benchsuite.matrix." + e)} name={quoteattr(c["case"])} '
                       f'time="{c.get("duration_s") or 0:.3f}">')
            status, msg = c["status"], c.get("reason") or ""
            detail = escape(json.dumps({k: c.get(k) for k in ("fixes", "runs", "environment") if c.get(k)},
                                       indent=1, default=str)[:20000])
            if status == "skipped":
                out.append(f"      <skipped message={quoteattr(msg)}/>")
            elif status in ("error", "crashed", "timeout"):
                out.append(f'      <error type="{status}" message={quoteattr(msg)}>{detail}</error>')
            elif not c["agrees"]:
                m = f"status {status}, expected {c.get('expected')}" + (f": {msg}" if msg else "")
                out.append(f'      <failure type="{status}" message={quoteattr(m)}>{detail}</failure>')
            out.append(f"      <system-out>{escape('status: ' + str(status))}</system-out>")
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


def main(*, cases_dir: Path, ids: list[str], with_: list[str], keyword: str | None = None,
         tags: list[str] | None = None, json_path: str | None = None, markdown_path: str | None = None,
         junit_path: str | None = None, timeout: float = 300.0, jobs: int | None = None, repeat: int = 1,
         ray: str | None = None, ray_workers: int | None = None) -> int:
    paths, unknown = resolve(ids, cases_dir)
    for _, msg in unknown:
        print(f"benchsuite matrix: {msg}", file=sys.stderr)
    if unknown:
        return 2
    paths = select(paths, keyword, tags)
    if not paths:
        raise UsageError("no case matches the selection (-k/--tag); `benchsuite list` shows ids and tags")
    quiet = check_outputs({"--json": json_path, "--markdown": markdown_path, "--junit": junit_path})
    ray_address = ray
    if ray_address and jobs:
        raise UsageError("--jobs is for a local run; with --ray the cells at a time are the cluster's CPUs "
                         "(--ray-workers N sets them)")
    if ray_workers and not ray_address:
        raise UsageError("--ray-workers goes with --ray")
    jobs = jobs or 2

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    envs = expand(with_, log=log)
    meta: dict[str, Any] = envelope("matrix", {
        "command": " ".join(["benchsuite"] + sys.argv[1:]), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environments": [env_label(p) for p in envs], "cases_dir": str(cases_dir),
        "repeat": repeat, "executor": {"kind": "local", "jobs": jobs}})
    order = {p.stem: i for i, p in enumerate(paths)}

    def ordered(cells):
        envs_order = {env_label(p): i for i, p in enumerate(envs)}
        return sorted(cells, key=lambda c: (envs_order.get(c["env"], 0), order.get(c["case"], -1)))

    def save(cells, final=False):
        renders = {json_path: lambda: strictjson.dumps({**meta, "cells": ordered(cells)}, indent=2, default=str),
                   markdown_path: lambda: markdown(ordered(cells), executor=meta["executor"]),
                   junit_path: lambda: junit(ordered(cells), meta)}
        for path, render in renders.items():
            if path and (final or path != "-"):
                write_atomic(path, render())

    cluster = None
    if ray_address:
        cluster = rayexec.Cluster(ray_address, workers=ray_workers, log=log)
        meta["executor"] = cluster.info()
    t0 = time.perf_counter()
    cells: list[dict] = []
    interrupted = False
    try:
        if cluster is not None:
            executor.run_on_ray(paths, envs, cluster, timeout=timeout, repeat=repeat, log=log,
                                on_cell=save, cells=cells, executor=meta["executor"])
        else:
            executor.run_local(paths, envs, jobs=jobs, timeout=timeout, log=log, on_cell=save, cells=cells,
                               repeat=repeat)
    except KeyboardInterrupt:
        interrupted = True
        meta["interrupted"] = True
        log("\ninterrupted: the finished cases are kept")
    finally:
        if cluster is not None:
            try:
                cluster.close()
            except KeyboardInterrupt:  # a second Ctrl-C while the local cluster stops: it is stopped anyway
                cluster.close()
    meta["duration_s"] = round(time.perf_counter() - t0, 1)
    minutes = meta["duration_s"] / 60
    meta["executor"]["cells_per_minute"] = round(len(cells) / minutes, 2) if minutes else None
    save(cells, final=True)
    print(table(ordered(cells)), file=sys.stderr if quiet else sys.stdout)
    agree = sum(c["agrees"] for c in cells)
    on = (f" on Ray ({meta['executor']['nodes']} node(s), {meta['executor']['workers']} at a time)"
          if cluster is not None else "")
    print(f"{len(paths)} case(s) x {len(envs)} environment(s): {agree} as declared, {len(cells) - agree} not"
          f" in {meta['duration_s']:.0f} s{on}" + (" (interrupted)" if interrupted else ""), file=sys.stderr)
    if interrupted:
        return 130
    return 0 if all(c["agrees"] for c in cells) else 1
