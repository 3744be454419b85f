"""The executor: a set of cases run in each of several environments, cell by cell.

Two implementations give the same cells ({case, env, pins, status, expected, agrees, reason, fixes,
environment, duration_s}): ``run_local`` (each environment built here, its cases run by the local runner)
and ``run_on_ray`` (tasks on a Ray cluster, rayexec.py). ``benchsuite run`` is a one-environment run_local;
``matrix`` and ``refresh`` run either; ``doctor --run`` and bisect's probes run run_local (bisect's Ray probes
are TaskStream tasks, as run_on_ray's). A cell's shape, the result of an environment that cannot be built, and
the progress line are defined here once.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from ..common import version
from . import rayexec, report
from .discover import load_case
from .envs import EnvError, ensure
from .raytasks import TaskStream
from .runner import run_cases


def failed_cells(ids: list[str], label: str, pins: list[str], reason: str) -> list[dict]:
    """The cells of cases that could not run in an environment (it could not be built, its task was lost)."""
    return [{"case": cid, "env": label, "pins": pins, "status": "error", "expected": None, "agrees": False,
             "reason": reason} for cid in ids]


def progress(where: str | None, done: int, total: int, r: dict, agrees: bool, suffix: str = "") -> str:
    """One line per finished case: "[where] [3/12] ok id: reproduced (expected reproduced) 2.1s" (no
    "[where] " when ``where`` is None: `benchsuite run`'s one environment)."""
    prefix = f"[{where}] " if where else ""
    return (f"{prefix}[{done}/{total}] {'ok ' if agrees else '!! '}{r['id']}: {r.get('status')} "
            f"(expected {r.get('expected') or '-'}) {r.get('duration_s', 0):.1f}s{suffix}")


def env_label(pins: list[str]) -> str:
    return " ".join(pins) if pins else "current"


def make_cell(r: dict, label: str, pins: list[str]) -> dict:
    """A matrix cell from one case's run result in the environment ``label``."""
    return {"case": r["id"], "env": label, "pins": pins, "status": r.get("status"),
            "expected": r.get("expected"), "agrees": report.agrees(r), "reason": r.get("reason"),
            "fixes": {f["name"]: f["works"] for f in r.get("fixes", [])},
            "repeat": r.get("repeat", 1), **({"runs": r["runs"]} if r.get("runs") and r.get("repeat", 1) > 1 else {}),
            "environment": {k: (r.get("environment") or {}).get(k)
                            for k in ("python", "torch", "transformers", "peft", "trl", "resolved_as_of")},
            "duration_s": r.get("duration_s")}


def run_local(paths: list[Path], envs: list[list[str]], *, jobs: int, timeout: float, log=print,
              on_cell=None, cells: list[dict] | None = None, repeat: int = 1, model: str | None = None,
              on_result=None, on_env_error=None, progress_lines: bool = True) -> list[dict]:
    """Cells {case, env, pins, status, expected, agrees, reason, environment}, env by env: each environment
    built here (an empty pin list is this one), its cases run by the local runner (runner.run_cases).

    ``cells`` (when given) is filled in place as each case finishes, so that an interrupted run keeps the
    finished cases of the environment in progress; ``on_cell(cells)`` is called after each case.
    ``on_result(result, cell)`` gets each case's full run result (an environment that cannot be built
    gives each of its cases an ``error`` result); when it returns True nothing more is run (--maxfail).
    ``on_env_error(label, exc)`` replaces the log line of an environment that cannot be built.
    ``progress_lines``: the progress line per case and the summary line per environment (a caller that
    prints its own passes False). ``model``: a local checkpoint the cases that support one run on."""
    cells = [] if cells is None else cells
    for n_env, pins in enumerate(envs, 1):
        label = env_label(pins)
        t0 = time.perf_counter()
        try:
            python = str(ensure(pins, log=log)) if pins else sys.executable
        except EnvError as exc:
            _env_failed(paths, label, pins, exc, cells, log, on_cell, on_result, on_env_error)
            continue
        build_s = time.perf_counter() - t0
        where = f"env {n_env}/{len(envs)} {label}" if progress_lines else None
        record = _Recorder(cells, where, label, pins, len(paths), log, on_cell, on_result)
        results = run_cases(paths, python=python, jobs=jobs, timeout=timeout, on_result=record,
                            repeat=repeat, model=model)
        if progress_lines:
            log(f"[{label}] {len(results)} case(s) in {time.perf_counter() - t0:.0f} s "
                f"(environment ready in {build_s:.0f} s)")
        if record.stopped:
            break
    return cells


def _env_failed(paths: list[Path], label: str, pins: list[str], exc: EnvError, cells: list[dict], log,
                on_cell, on_result, on_env_error) -> None:
    """An environment that cannot be built: each of its cases an ``error`` cell (and result)."""
    reason = f"environment could not be built: {exc}"
    if on_env_error:
        on_env_error(label, exc)
    else:
        log(f"[{label}] {reason}")
    for cell in failed_cells([p.stem for p in paths], label, pins, reason):
        cells.append(cell)
        if on_result:
            on_result({"id": cell["case"], "status": "error", "expected": None, "reason": reason}, cell)
    if on_cell:
        on_cell(cells)


class _Recorder:
    """The runner's on_result for one environment: the cell kept, the progress line, the caller told."""

    def __init__(self, cells: list[dict], where: str | None, label: str, pins: list[str], total: int, log,
                 on_cell, on_result):
        self.cells, self.where, self.label, self.pins, self.total = cells, where, label, pins, total
        self.log, self.on_cell, self.on_result = log, on_cell, on_result
        self.done = 0
        self.stopped = False

    def __call__(self, r: dict) -> bool:
        cell = make_cell(r, self.label, self.pins)
        self.cells.append(cell)
        self.done += 1
        if self.where:
            self.log(progress(self.where, self.done, self.total, r, cell["agrees"]))
        if self.on_cell:
            self.on_cell(self.cells)
        if self.on_result and self.on_result(r, cell):
            self.stopped = True
        return self.stopped


def _gpu_skipped(ids: list[str], pins: list[str], repeat: int) -> list[dict]:
    reason = "needs a CUDA GPU: the Ray cluster has none (the task asks for num_gpus=1)"
    return [{"case": cid, "env": env_label(pins), "pins": pins, "status": "skipped", "expected": None,
             "agrees": True, "reason": reason, "fixes": {}, "repeat": repeat, "environment": {}, "duration_s": 0.0}
            for cid in ids]


def _needs_gpu(path: Path) -> bool:
    try:
        case = load_case(path)
    except Exception:  # the worker reports the load error as the case's result
        return False
    return bool(case.requires_cuda or case.requires_gpu_below)


def run_on_ray(paths: list[Path], envs: list[list[str]], cluster: rayexec.Cluster, *, timeout: float,
               repeat: int = 1,
               log=print, on_cell=None, cells: list[dict] | None = None, executor: dict | None = None,
               chunk: int | None = None) -> list[dict]:
    """The matrix's cells, as run_local makes them, from Ray tasks.

    Each environment's cases are split into tasks of ``chunk`` cases (default: enough tasks to keep every
    worker busy: the runner's start-up, ~5 s of imports, is paid once per task). Cases that need a GPU
    go in tasks of their own that ask Ray for one (num_gpus=1); where the cluster has no GPU they are
    ``skipped`` with the reason. ``on_cell(cells)`` is called after every cell; ``executor`` (a dict) is
    updated in place with the tasks and the cells each node ran."""
    cells = [] if cells is None else cells
    executor = {} if executor is None else executor
    sources = {p.stem: p.read_text() for p in paths}
    gpu_ids = [p.stem for p in paths if _needs_gpu(p)]
    cpu_ids = [p.stem for p in paths if p.stem not in gpu_ids]
    per_env = max(1, math.ceil(cluster.workers / max(1, len(envs))))
    size = chunk or max(1, math.ceil(len(cpu_ids) / per_env))
    stream = TaskStream(cluster, timeout, repeat)
    done = [0] * len(envs)
    for i, pins in enumerate(envs):
        for k in range(0, len(cpu_ids), size):
            stream.add(i, pins, {c: sources[c] for c in cpu_ids[k:k + size]})
        if gpu_ids and cluster.gpus:
            stream.add(i, pins, {c: sources[c] for c in gpu_ids}, gpu=True)
    executor.update(tasks=len(stream.queue), cases_per_task=size, cells_by_node=executor.get("cells_by_node", {}))
    if gpu_ids:
        executor["gpu_cases"] = gpu_ids
    versions = executor.setdefault("worker_benchsuite_versions", [])

    def add(cell: dict, node: str | None = None) -> None:
        cells.append(cell)
        if node:
            executor["cells_by_node"][node] = executor["cells_by_node"].get(node, 0) + 1
        if on_cell:
            on_cell(cells)

    if gpu_ids and not cluster.gpus:
        for i, pins in enumerate(envs):
            for skipped in _gpu_skipped(gpu_ids, pins, repeat):
                add(skipped)
                done[i] += 1
    n_cases = len(paths)
    for i, ev in stream:
        pins = envs[i]
        label = env_label(pins)
        kind = ev["event"]
        if kind == "start":
            if ev.get("benchsuite_version") not in versions:
                versions.append(ev.get("benchsuite_version"))
                if ev.get("benchsuite_version") != version():
                    log(f"warning: node {ev.get('node')} runs benchsuite {ev.get('benchsuite_version')}, this "
                        f"command {version()}: its verdicts may differ; install the same version on every node")
        elif kind == "env":
            for m in ev.get("log", []):
                log(f"[{label}] [{ev.get('node')}] {m}")
            if ev.get("seconds", 0) >= 1:
                log(f"[{label}] environment ready on {ev.get('node')} in {ev['seconds']:.0f} s")
        elif kind == "env-error":
            log(f"[{label}] environment could not be built on {ev.get('node')}: {ev['reason']}")
        elif kind == "result":
            r = ev["result"]
            cell = make_cell(r, label, pins)
            done[i] += 1
            log(progress(f"env {i + 1}/{len(envs)} {label}", done[i], n_cases, r, cell["agrees"],
                         f" on {ev.get('node')}"))
            add(cell, ev.get("node"))
        if kind in ("env-error", "lost"):
            missing = ev.get("missing") or []
            if kind == "env-error":
                reason = ev["reason"]
            else:
                reason = (f"the Ray task running this cell was lost on node {ev.get('node') or '(not started)'}: "
                          f"{ev['reason']}")
                log(f"[{label}] {reason}; {len(missing)} case(s) marked error")
            for failed in failed_cells(missing, label, pins, reason):
                done[i] += 1
                add(failed, ev.get("node"))
    return cells
