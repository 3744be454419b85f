"""The local runner: case files run in a runner process of the target environment (harness/server.py), each
case and scenario in its own forked process; results stream back as each case finishes.

This is what every executor runs in the end (executor.run_local here, a Ray task on its node)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .server import MARK


def run_cases(paths: list[Path], *, python: str = sys.executable, jobs: int = 2, timeout: float = 300.0,
              model: str | None = None, on_result=None, repeat: int = 1, threads: int | None = None) -> list[dict]:
    """Run case files in a fresh runner process; returns results in the order they finished.

    ``on_result(result)`` is called as each case finishes; when it returns True the remaining cases are
    not run (--maxfail). ``repeat``: runs of each case, each in fresh processes (a case whose verdicts
    differ between runs is ``flaky``); ``timeout`` is per run. ``threads``: torch threads per case (default:
    the machine's CPUs shared among ``jobs``). The runner's work folder (results, logs, the cases' temporary
    files) is removed whatever happens, Ctrl-C and killed cases included.
    """
    results: list[dict] = []
    stream = iter_results(paths, python=python, jobs=jobs, timeout=timeout, model=model, repeat=repeat,
                          threads=threads)
    try:
        for result in stream:
            results.append(result)
            if on_result and on_result(result):
                break
    finally:
        stream.close()  # stops the runner (and its cases) when the caller stopped early or was interrupted
    return results


def iter_results(paths: list[Path], *, python: str = sys.executable, jobs: int = 2, timeout: float = 300.0,
                 model: str | None = None, repeat: int = 1, threads: int | None = None):
    """The results of run_cases, yielded as each case finishes. Closing the generator early (or an
    exception while it waits) kills the runner and its cases; a runner that dies yields an ``error``
    result for every case it never reported."""
    if not paths:
        return
    work = tempfile.mkdtemp(prefix="benchsuite-run-")
    cmd = [python, "-m", "benchsuite.harness.server", "--jobs", str(jobs), "--timeout", str(timeout),
           "--workdir", work]
    if repeat > 1:
        cmd += ["--repeat", str(repeat)]
    if threads:
        cmd += ["--threads", str(threads)]
    if model:
        cmd += ["--model", str(Path(model).resolve())]
    cmd += [str(p.resolve()) for p in paths]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # torch makes an (empty) compile cache folder in $TMPDIR when transformers/peft are imported; keep it
    # inside the work folder unless the user chose one.
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(work, "torchinductor"))
    done: set[str] = set()
    finished = False
    try:
        with tempfile.TemporaryFile(mode="w+") as err:
            # cwd: the work folder, so that `-m` cannot put a checkout on sys.path ahead of the environment's
            # benchsuite (a pinned environment would import the checkout's package without its built core)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=work,
                                    start_new_session=True)
            try:
                assert proc.stdout is not None  # stdout=PIPE
                for line in proc.stdout:
                    if line.startswith(MARK):
                        result = json.loads(line[len(MARK):])
                        done.add(result["id"])
                        yield result
                proc.wait()
                finished = True
            finally:
                if not finished:  # stopped early (--maxfail), interrupted, or the consumer went away
                    try:
                        os.killpg(proc.pid, 9)
                    except ProcessLookupError:
                        pass
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
            err.seek(0)
            stderr = err.read()[-3000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for p in paths:  # the runner itself died: the cases it never reported are errors, not lost
        if p.stem not in done:
            yield {"id": p.stem, "status": "error", "expected": None,
                   "reason": f"the runner ({python}) stopped before reporting this case (exit {proc.returncode})",
                   "log_tail": stderr}
