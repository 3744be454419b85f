"""The grid: configurations expanded, each run in a fresh forked child, results compared."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .. import strictjson
from ..common import die_with_parent
from ..harness.discover import check_model_path
from ..harness.report import UsageError, check_output, version, write_atomic
from ..harness.versions import environment
from .configs import (  # noqa: F401  (re-exported: the grid's names as they were)
    CHOICES,
    CPU_DEFAULT_PRECISION,
    DEFAULT_GRID,
    KEYS,
    expand,
    gradient_baseline,
    label,
    parse_grid,
    with_baselines,
)
from .plot import plot
from .report import derive, gradient_cell, gradient_notes, markdown, recommend  # noqa: F401  (re-exported)
from .worker import MODELS, run


def _child(cfg: dict, out: Path, log: Path) -> None:
    """The forked child: run the configuration, write its result (failures are results too), exit."""
    die_with_parent()
    # Ctrl-C is the parent's to handle (it stops the grid and kills this process): an interrupted
    # configuration is never recorded as a result of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The libraries' warnings and log lines go to a file, kept in the result, not to the console.
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 0
    try:
        import torch
        torch.set_num_threads(cfg.get("threads") or os.cpu_count() or 1)
        res = {"status": "ok", **run(cfg)}
    except MemoryError as exc:
        res, code = {"status": "oom", "error": f"MemoryError: {exc}"}, 1
    except RuntimeError as exc:
        text = str(exc)
        oom = "out of memory" in text.lower() or "can't allocate memory" in text.lower()
        res, code = {"status": "oom" if oom else "error", "error": f"RuntimeError: {text[:1000]}"}, 1
    except BaseException as exc:
        res, code = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:1000]}",
                     "traceback": traceback.format_exc()[-2000:]}, 1
    try:
        out.write_text(json.dumps(res, default=str))
    finally:
        os._exit(code)


def run_one(cfg: dict, timeout: float) -> dict:
    """Fork, run the configuration in the child, collect its result; failures are results too."""
    out = Path(cfg["workdir"]) / "result.json"
    log = Path(cfg["workdir"]) / "output.log"
    pid = os.fork()
    if pid == 0:
        _child(cfg, out, log)
    t0 = time.monotonic()
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"status": "timeout", "error": f"no result after {timeout:.0f} s"}
            time.sleep(0.05)
    except BaseException:  # Ctrl-C: the configuration in progress is dropped, its process with it
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    text = log.read_text(errors="replace").strip() if log.exists() else ""
    if out.exists():
        res = json.loads(out.read_text())
        if text:
            res["log"] = text[-4000:]
        return res
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
    # SIGKILL with no result is what the kernel's out-of-memory killer does.
    return {"status": "oom" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9 else "crashed",
            "error": f"the configuration's process ended by {how} before reporting", "log": text[-4000:]}


def check_device(device: str | None, option: str = "--device") -> str:
    """cpu or cuda[:N] that this machine has; UsageError otherwise."""
    import torch
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {device!r}: not a device (cpu or cuda[:N])") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {device}: no CUDA device is visible to torch on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{option} {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise UsageError(f"{option} {device!r}: only cpu and cuda are measured")
    return str(dev)


@dataclass
class Options:
    """What `benchsuite bench` was asked for (its command-line options, by name)."""
    model: str = "tiny-llama"
    seq_len: int = 512
    batch: int = 4
    grid: list[str] = field(default_factory=list)
    steps: int = 3
    warmup: int = 1
    device: str | None = None
    scan: bool = False
    max_memory_mb: int | None = None
    timeout: float = 600.0
    json_path: str | None = None
    markdown_path: str | None = None
    plot_path: str | None = None
    budget_gib: float | None = None


def main(**options) -> int:
    """The grid run as `benchsuite bench` runs it; options as Options names them (a usage error is
    raised before the first configuration)."""
    args = Options(**options)
    if args.budget_gib is not None and not args.budget_gib > 0:  # (before check_device imports torch: at once)
        raise UsageError(f"--budget {args.budget_gib:g}: a memory budget in GiB, more than 0")
    device = check_device(args.device)
    grid = parse_grid(args.grid, device, args.batch)
    model = args.model if args.model in MODELS else check_model_path(args.model)
    for opt, path in (("--json", args.json_path), ("--markdown", args.markdown_path), ("--plot", args.plot_path)):
        check_output(path, opt)
    if args.plot_path == "-":
        raise UsageError("--plot needs a file name (a PNG cannot go to stdout)")
    if args.plot_path:
        try:
            import matplotlib  # noqa: F401  (found now, not after the grid)
        except ImportError as exc:
            raise UsageError(f"--plot needs matplotlib ({exc}); pip install matplotlib") from None
    configs = with_baselines(expand(grid))
    root = tempfile.mkdtemp(prefix="benchsuite-bench-")
    try:
        # torch's compile cache folder (made empty at import) goes with the rest; removed at the end.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(root, "torchinductor"))
        return _run_grid(args, grid, configs, model, device, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _progress(i: int, n: int, c: dict, res: dict) -> None:
    if res.get("status") == "ok":
        print(f"[{i}/{n}] {label(c):<32} peak {res['peak_memory_bytes'] / 2**20:7.0f} MiB "
              f"(est {res['estimated_peak_memory_bytes'] / 2**20:6.0f})  {res['step_time_s']:.3f} s/step "
              f"(spread {100 * res.get('step_time_spread_fraction', 0):.0f}%)  "
              f"{res['tokens_per_s']:8.0f} tok/s", file=sys.stderr, flush=True)
    else:
        print(f"[{i}/{n}] {label(c):<32} {res['status']}: {res.get('error', '')[:120]}", file=sys.stderr, flush=True)


def _measure(args: Options, configs: list[dict], model: str, device: str, root: str, meta: dict) -> list[dict]:
    """Every configuration in turn; the JSON rewritten after each (an interrupted grid keeps what finished).
    Ctrl-C ends the loop with meta["interrupted"] set."""
    results: list[dict] = []
    signatures: dict[str, dict] = {}
    try:
        for i, c in enumerate(configs, 1):
            with tempfile.TemporaryDirectory(prefix=f"config{i}-", dir=root) as work:
                cfg = {**c, "model": model, "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps,
                       "warmup": args.warmup, "device": device, "scan": args.scan, "workdir": work,
                       "max_memory_mb": args.max_memory_mb}
                t0 = time.perf_counter()
                res = {**c, **run_one(cfg, args.timeout)}
            # Signatures are compared here, then kept out of the results (128 numbers per parameter).
            signatures[label(c)] = {k: res.pop(k) for k in ("gradient_signature", "gradient_signature_micro_mean")
                                    if k in res}
            res["wall_s"] = round(time.perf_counter() - t0, 2)
            results.append(res)
            if res.get("status") == "ok":
                meta["memory_source"] = res["peak_memory_source"]
            _progress(i, len(configs), c, res)
            derive(results, signatures)
            if args.json_path and args.json_path != "-":
                write_atomic(args.json_path, strictjson.dumps({**meta, "results": results}, indent=2, default=str))
    except KeyboardInterrupt:
        meta["interrupted"] = True
        print(f"\ninterrupted: {len(results)} of {len(configs)} configuration(s) finished; writing their results",
              file=sys.stderr)
    derive(results, signatures)
    return results


def _run_grid(args: Options, grid: dict, configs: list[dict], model: str, device: str, root: str) -> int:
    for name in ("torch", "transformers", "peft"):
        __import__(name)  # warm parent: each fork starts with the libraries imported
    budget = args.budget_gib
    meta = {"benchsuite_version": version(), "kind": "bench", "model": args.model, "batch": args.batch,
            "seq_len": args.seq_len, "steps": args.steps, "warmup": args.warmup, "device": device, "grid": grid,
            "scan": args.scan, "budget_gib": budget, "environment": environment(),
            "command": " ".join(["benchsuite"] + sys.argv[1:]), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    t_all = time.perf_counter()
    results = _measure(args, configs, model, device, root, meta)
    meta["duration_s"] = round(time.perf_counter() - t_all, 1)
    picks = recommend(results, budget) if budget else []
    if budget:
        meta["recommendation"] = picks
    md = markdown(results, meta)
    print(md, file=sys.stderr if "-" in (args.json_path, args.markdown_path) else sys.stdout)
    if args.json_path:
        write_atomic(args.json_path, strictjson.dumps({**meta, "results": results}, indent=2, default=str))
    if args.markdown_path:
        write_atomic(args.markdown_path, md)
    if args.plot_path:
        try:
            plot(results, args.plot_path, f"{args.model}, batch {args.batch} x {args.seq_len}, {device}: "
                                     "peak memory vs throughput", budget)
        except Exception as exc:  # results are already written: say why, keep them
            print(f"benchsuite bench: no plot ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 1
    logged = sum(1 for r in results if r.get("log"))
    if logged:
        print(f"library warnings/log lines of {logged} configuration(s) are kept in "
              + ("the JSON (field 'log')" if args.json_path else "each result's 'log' field (use --json PATH)"),
              file=sys.stderr)
    for line in picks:
        print(line, file=sys.stderr)
    print(f"{len(results)} of {len(configs)} configuration(s) in {meta['duration_s']:.0f} s", file=sys.stderr)
    if meta.get("interrupted"):
        return 130
    return 0 if all(r.get("status") == "ok" for r in results) else 1
