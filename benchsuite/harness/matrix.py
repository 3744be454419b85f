"""`benchsuite matrix`: the cases in several pinned environments, as a case x environment table."""
from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

from . import report
from .envs import EnvError, ensure
from .run import run_cases


def expand(with_args: list[str]) -> list[list[str]]:
    """["transformers==4.40.2,4.57.6", "peft==0.10.0"] -> every combination, as lists of pins."""
    axes = []
    for arg in with_args:
        if "==" not in arg:
            raise SystemExit(f"benchsuite matrix: --with takes NAME==V1,V2,..., not {arg!r}")
        name, versions = arg.split("==", 1)
        vs = [v.strip() for v in versions.split(",") if v.strip()]
        if not vs:
            raise SystemExit(f"benchsuite matrix: no version given in {arg!r}")
        axes.append([f"{name.strip()}=={v}" for v in vs])
    return [list(c) for c in itertools.product(*axes)] if axes else [[]]


def env_label(pins: list[str]) -> str:
    return " ".join(pins) if pins else "current"


def run_matrix(paths: list[Path], envs: list[list[str]], *, jobs: int, timeout: float, log=print,
               on_env_done=None) -> list[dict]:
    """Cells {case, env, pins, status, expected, agrees, reason, environment}, env by env."""
    cells: list[dict] = []
    for pins in envs:
        label = env_label(pins)
        t0 = time.perf_counter()
        try:
            python = str(ensure(pins, log=log)) if pins else sys.executable
        except EnvError as exc:
            log(f"[{label}] environment could not be built: {exc}")
            cells += [{"case": p.stem, "env": label, "pins": pins, "status": "error", "expected": None,
                       "agrees": False, "reason": f"environment could not be built: {exc}"} for p in paths]
            if on_env_done:
                on_env_done(cells)
            continue
        build_s = time.perf_counter() - t0
        results = run_cases(paths, python=python, jobs=jobs, timeout=timeout)
        for r in results:
            cells.append({"case": r["id"], "env": label, "pins": pins, "status": r.get("status"),
                          "expected": r.get("expected"), "agrees": report.agrees(r), "reason": r.get("reason"),
                          "fixes": {f["name"]: f["works"] for f in r.get("fixes", [])},
                          "environment": {k: (r.get("environment") or {}).get(k)
                                          for k in ("python", "torch", "transformers", "peft", "trl")},
                          "duration_s": r.get("duration_s")})
        log(f"[{label}] {len(results)} case(s) in {time.perf_counter() - t0:.0f} s (environment ready in {build_s:.0f} s)")
        if on_env_done:
            on_env_done(cells)
    return cells


SHORT = {"reproduced": "REPRO", "not-reproduced": "no", "fix-failed": "FIX-FAILED", "error": "ERROR",
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


def markdown(cells: list[dict], title: str = "benchsuite matrix") -> str:
    cases, envs, index = _grid(cells)
    lines = [f"# {title}", "", "| case | " + " | ".join(f"`{e}`" for e in envs) + " |",
             "|---|" + "---|" * len(envs)]
    for case in cases:
        row = []
        for e in envs:
            c = index.get((case, e))
            row.append("-" if c is None else (c["status"] + (" **(differs from declared)**" if not c["agrees"] else "")))
        lines.append(f"| `{case}` | " + " | ".join(row) + " |")
    notes = [c for c in cells if c.get("reason") and c["status"] != "skipped"]
    if notes:
        lines += ["", "Notes:", ""] + [f"- `{c['case']}` in `{c['env']}`: {c['reason']}" for c in notes]
    versions = {c["env"]: c.get("environment") for c in cells if c.get("environment")}
    if versions:
        lines += ["", "Environments:", ""] + [
            f"- `{e}`: " + ", ".join(f"{k} {v}" for k, v in (env or {}).items() if v) for e, env in versions.items()]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    from .discover import default_cases_dir, resolve
    cases_dir = Path(args.cases_dir) if args.cases_dir else default_cases_dir()
    paths, unknown = resolve(args.ids, cases_dir)
    for _, msg in unknown:
        print(f"benchsuite matrix: {msg}", file=sys.stderr)
    if unknown:
        return 2
    envs = expand(args.with_)
    meta = {"command": " ".join(["benchsuite"] + sys.argv[1:]), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environments": [env_label(p) for p in envs], "cases_dir": str(cases_dir)}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    def save(cells):
        if args.json:
            report.write_atomic(args.json, json.dumps({**meta, "cells": cells}, indent=2, default=str))
        if args.markdown:
            report.write_atomic(args.markdown, markdown(cells))

    t0 = time.perf_counter()
    cells = run_matrix(paths, envs, jobs=args.jobs, timeout=args.timeout, log=log, on_env_done=save)
    meta["duration_s"] = round(time.perf_counter() - t0, 1)
    save(cells)
    print(table(cells))
    print(f"{len(paths)} case(s) x {len(envs)} environment(s) in {meta['duration_s']:.0f} s", file=sys.stderr)
    return 0 if all(c["agrees"] for c in cells) else 1
