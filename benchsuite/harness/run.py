"""`benchsuite run`: start a runner in the target environment, stream its results, write reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import report
from .server import MARK


def run_cases(paths: list[Path], *, python: str = sys.executable, jobs: int = 2, timeout: float = 300.0,
              model: str | None = None, on_result=None) -> list[dict]:
    """Run case files in a fresh runner process; returns results in the order they finished."""
    if not paths:
        return []
    cmd = [python, "-m", "benchsuite.harness.server", "--jobs", str(jobs), "--timeout", str(timeout)]
    if model:
        cmd += ["--model", str(Path(model).resolve())]
    cmd += [str(p.resolve()) for p in paths]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: list[dict] = []
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                start_new_session=True)
        try:
            for line in proc.stdout:
                if line.startswith(MARK):
                    result = json.loads(line[len(MARK):])
                    results.append(result)
                    if on_result:
                        on_result(result)
            proc.wait()
        except BaseException:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read()[-3000:]
    done = {r["id"] for r in results}
    for p in paths:  # the runner itself died: the cases it never reported are errors, not lost
        if p.stem not in done:
            r = {"id": p.stem, "status": "error", "expected": None,
                 "reason": f"the runner ({python}) stopped before reporting this case (exit {proc.returncode})",
                 "log_tail": stderr}
            results.append(r)
            if on_result:
                on_result(r)
    return results


def main(args) -> int:
    from .discover import default_cases_dir, resolve
    cases_dir = Path(args.cases_dir) if args.cases_dir else default_cases_dir()
    if not cases_dir.is_dir():
        print(f"benchsuite run: no such cases folder: {cases_dir}", file=sys.stderr)
        return 2
    paths, unknown = resolve(args.ids, cases_dir)
    label = "current environment"
    python = sys.executable
    results: list[dict] = []
    meta = {"label": label, "cases_dir": str(cases_dir), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(["benchsuite"] + sys.argv[1:])}
    for uid, msg in unknown:
        print(f"benchsuite run: {msg}", file=sys.stderr)
        results.append({"id": uid, "status": "error", "expected": None, "reason": msg})
    if args.with_:
        from .envs import EnvError, ensure
        label = "with " + " ".join(args.with_)
        meta["label"] = label
        try:
            python = str(ensure(args.with_, log=lambda m: print(m, file=sys.stderr)))
        except EnvError as exc:
            print(f"benchsuite run: environment [{' '.join(args.with_)}] could not be built: {exc}", file=sys.stderr)
            for p in paths:
                results.append({"id": p.stem, "status": "error", "expected": None,
                                "reason": f"environment could not be built: {exc}"})
            paths = []
    total = len(paths)
    outputs = dict(json_path=args.json, junit_path=args.junit, markdown_path=args.markdown)
    report.write_all(results, meta, **outputs)
    print(f"running {total} case(s) from {cases_dir} ({label}, {args.jobs} at a time, timeout {args.timeout:.0f} s)",
          file=sys.stderr)

    def on_result(r: dict) -> None:
        results.append(r)
        report.write_all(results, meta, **outputs)
        mark = "ok " if report.agrees(r) else "!! "
        print(f"[{len(results) - len(unknown)}/{total}] {mark}{r['id']}: {r.get('status')} "
              f"(expected {r.get('expected') or '-'}) {r.get('duration_s', 0):.1f}s", file=sys.stderr, flush=True)

    try:
        run_cases(paths, python=python, jobs=args.jobs, timeout=args.timeout, model=args.model, on_result=on_result)
    except KeyboardInterrupt:
        print("\ninterrupted: the results of finished cases are kept", file=sys.stderr)
        return 130
    if results:
        env = next((r.get("environment") for r in results if r.get("environment")), None)
        if env:
            meta["environment"] = env
            report.write_all(results, meta, **outputs)
            print("environment: " + ", ".join(f"{k} {env.get(k)}" for k in
                                                ("python", "torch", "transformers", "peft", "trl") if env.get(k)))
    print(report.table(results))
    for k, v in outputs.items():
        if v:
            print(f"wrote {v}", file=sys.stderr)
    if unknown:
        return 2
    return 0 if all(report.agrees(r) for r in results) else 1
