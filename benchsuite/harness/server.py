"""The runner process: imports the heavy libraries once, then forks one child per case.

Started by `benchsuite run` with the Python of the target environment (the current one or a pinned
virtualenv). Each child runs one case and writes its result file; the server watches for timeouts
and crashes and prints one protocol line per finished case on stdout. The parent must not touch a
CUDA device before forking (importing torch does not).

    python -m benchsuite.harness.server --jobs 2 --timeout 300 [--model PATH] [--workdir DIR] CASE_FILE...
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from ..common import die_with_parent
from .envs import managed
from .execute import execute
from .versions import environment

MARK = "@@benchsuite-result@@ "


# A case needs the Hugging Face libraries when its file names one of them or uses a ctx helper beyond the
# torch-only ones (train, torchrun and the rank facts). Warming only what the selected cases need starts a
# folder of torch-only cases in about 4 s instead of 14 s here; guessing too little costs only time, for each
# case imports what it uses.
_NEEDS_LIBRARIES = re.compile(r"\b(transformers|peft|trl|accelerate)\b"
                              r"|ctx\.(?!(train|torchrun|observed|workdir|seed|rank|local_rank|world_size|device"
                              r"|backend|model_path)\b)\w+")


def _needs_libraries(paths: list[Path]) -> bool:
    """Whether one of these case files needs the Hugging Face libraries (_NEEDS_LIBRARIES). A --model alone is no
    reason: the cases that load it name transformers or use ctx's model helpers."""
    for path in paths:
        try:
            if _NEEDS_LIBRARIES.search(path.read_text(errors="replace")):
                return True
        except OSError:
            return True
    return False


def _warm_imports(libraries: bool = True) -> None:
    """Import what the cases share, once. In a pinned environment the bytecode of what this imports is written
    to the environment's folder in the cache (envs.managed), so only the first runner there compiles it."""
    keep = sys.dont_write_bytecode
    sys.dont_write_bytecode = keep and not managed()
    try:
        _import_shared(libraries)
    finally:
        sys.dont_write_bytecode = keep  # a case's own files: as the user set it


def _import_shared(libraries: bool) -> None:
    # torch._dynamo: the first optimizer a process builds imports it (2.5 s here), so every case would pay it
    for name in ("torch", "torch._dynamo", *(("transformers", "peft", "accelerate") if libraries else ())):
        try:
            __import__(name)
        except Exception:  # a case that needs it will report the failure itself
            pass
    if not libraries:
        return
    try:  # the classes every case uses: importing them once here saves each fork the lazy import
        import transformers
        _ = transformers.LlamaForCausalLM, transformers.AutoModelForSequenceClassification
        _ = transformers.Trainer, transformers.TrainingArguments  # ~3 s per scenario otherwise
        import peft  # noqa: F401
        from peft import LoraConfig, get_peft_model  # noqa: F401
    except Exception:
        pass


def _child(path: Path, result_file: Path, log_file: Path, model: str | None, threads: int,
           repeat: int = 1) -> None:
    os.setpgid(0, 0)  # its own group: a timeout kills the case and its scenario processes together
    die_with_parent()
    # Everything the case puts in a temporary folder lands inside the run's work folder, which the
    # parent removes even when the case is killed (timeout, Ctrl-C) before it could clean up.
    tmp_dir = result_file.with_suffix(".tmpdir")
    tmp_dir.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(tmp_dir)
    tempfile.tempdir = None
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 0
    try:
        import torch
        torch.set_num_threads(threads)
        result = execute(path, model, repeat=repeat)
    except BaseException as exc:  # pragma: no cover - harness failure, still a result
        import traceback
        result = {"id": path.stem, "status": "error", "reason": f"harness error: {exc!r}",
                  "detail": traceback.format_exc()}
        code = 1
    tmp = result_file.with_suffix(".part")
    tmp.write_text(json.dumps(result, default=str))
    tmp.rename(result_file)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _emit(result: dict) -> None:
    sys.stdout.write(MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def serve(paths: list[Path], jobs: int, timeout: float, model: str | None, workdir: str | None = None,
          repeat: int = 1, threads: int | None = None) -> None:
    """Run the cases; results, logs and the cases' temporary files go to ``workdir`` (made and removed
    here when not given; the caller that gives one removes it). ``repeat``: runs of each case (see
    execute.execute); ``timeout`` is per run, so a case gets ``timeout * repeat``. ``threads``: torch threads
    per case (default: the machine's CPUs shared among ``jobs``; a Ray task gives the CPUs it was granted)."""
    if workdir is None:
        work = tempfile.mkdtemp(prefix="benchsuite-run-")
        try:
            serve(paths, jobs, timeout, model, work, repeat, threads)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    _warm_imports(_needs_libraries(paths))
    env = environment()
    work_dir = Path(workdir)
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    pending = list(paths)
    running: dict[int, tuple[Path, float, Path, Path]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            path = pending.pop(0)
            result_file, log_file = work_dir / f"{path.stem}.json", work_dir / f"{path.stem}.log"
            pid = os.fork()
            if pid == 0:
                _child(path, result_file, log_file, model, threads, repeat)
            running[pid] = (path, time.monotonic(), result_file, log_file)
        time.sleep(0.02)
        for pid, (path, start, result_file, log_file) in list(running.items()):
            elapsed = time.monotonic() - start
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0 and elapsed <= timeout * repeat:
                continue
            if done == 0:  # over time: kill the case's whole process group
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                result: dict = {"id": path.stem, "status": "timeout",
                          "reason": f"no result after {timeout * repeat:.0f} s; killed", "log_tail": _tail(log_file)}
            elif result_file.exists():
                result = json.loads(result_file.read_text())
            else:
                if os.WIFSIGNALED(status):
                    sig = os.WTERMSIG(status)
                    how = f"killed by signal {sig} ({signal.Signals(sig).name})"
                else:
                    how = f"exited with code {os.WEXITSTATUS(status)}"
                result = {"id": path.stem, "status": "crashed", "reason": f"case process {how} before reporting",
                          "log_tail": _tail(log_file)}
            del running[pid]
            result.setdefault("environment", env)
            result.setdefault("repeat", repeat)
            result.setdefault("duration_s", round(elapsed, 3))
            if result.get("status") in ("error", "crashed", "timeout", "fix-failed"):
                result.setdefault("log_tail", _tail(log_file))
            _emit(result)
            shutil.rmtree(result_file.with_suffix(".tmpdir"), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchsuite.harness.server")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per case")
    ap.add_argument("--workdir", default=None, help="an existing folder for results, logs and temporary files")
    ap.add_argument("cases", nargs="*", type=Path)
    args = ap.parse_args(argv)
    # The runner goes when the process that started it goes (a Ray worker that was lost, a killed driver):
    # its cases already die with it (their own die_with_parent), so nothing is left running.
    die_with_parent()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    serve(args.cases, args.jobs, args.timeout, args.model, args.workdir, max(1, args.repeat), args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
