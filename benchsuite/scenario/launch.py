"""Multi-process scenarios under torch.distributed.run (torchrun): what ``ctx.torchrun(fn, ...)`` starts.

The ranks are launched by torchrun's own launcher: the arguments of ``torchrun --standalone --nnodes=1
--nproc-per-node=N --max-restarts=0 --start-method=fork`` are parsed by torch.distributed.run and given
to its elastic agent (``elastic_launch``), in the scenario's process, with this module's rank function
as the entrypoint. The agent does the rendezvous on a free local port, sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT, watches the ranks and stops them all when one fails. Forking
the ranks (torchrun's option for a function entrypoint) keeps the scenario's imports: a rank starts in
well under a second, where a fresh interpreter spends ~5 s importing transformers and peft. The ranks
stay in the case's process group and ask the kernel to kill them when the scenario process dies, so
the harness's timeout (which kills that group) ends them all; nothing is left.

A rank makes a Context for itself (``ctx.rank``, ``ctx.local_rank``, ``ctx.world_size``, ``ctx.device``,
``ctx.backend``), joins the process group (nccl where every rank has a GPU of its own, else gloo on the
CPU; a 60 s timeout on every collective) and calls ``fn(ctx, **options)``. Rank 0 writes its
TrainResult's summary and the warnings it saw; a rank that raises writes the exception. Every rank
leaves through multiprocessing's os._exit: a gloo process group's teardown can wait for ever.
"""
from __future__ import annotations

import builtins
import functools
import json
import os
import sys
import time
import traceback
import uuid
from pathlib import Path

from ..common import case_module_name, die_with_parent, import_case_file
from .result import TrainResult

COLLECTIVE_TIMEOUT_S = 60


def backend_for(nproc: int) -> str:
    """nccl where there is a CUDA GPU for each rank, else gloo (the ranks on the CPU)."""
    try:
        import torch
        if torch.cuda.is_available() and torch.cuda.device_count() >= nproc:
            return "nccl"
    except Exception:
        pass
    return "gloo"


def _function(file: str, name: str):
    """The case file's function: from the module the harness loaded (the ranks are forked from the
    scenario process), else loaded from the file."""
    loaded = sys.modules.get(case_module_name(file))
    if loaded is not None and getattr(loaded, "__file__", None) == file and hasattr(loaded, name):
        return getattr(loaded, name)
    return getattr(import_case_file(file), name)


def _rank(context_cls: type, spec_path: str) -> None:
    """One rank (forked by torchrun's agent, which has set RANK, WORLD_SIZE, ...). Returns None when done,
    for the agent to collect; the process then leaves through multiprocessing's os._exit, so no process
    group is torn down (a gloo group's teardown can wait for ever). A failure is written to
    rank<N>.error and raised, for the agent to stop the other ranks."""
    die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec_path).parent
    rank = int(os.environ.get("RANK", "0"))
    try:
        import datetime
        import warnings

        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = spec["backend"]
        ctx = context_cls(spec["workdir"], model_path=spec.get("model_path"), seed=spec.get("seed", 0))
        ctx.rank, ctx.local_rank, ctx.world_size = rank, local_rank, int(os.environ.get("WORLD_SIZE", "1"))
        ctx.backend = backend
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
            ctx.device = torch.device("cuda", local_rank)
        fn = _function(spec["file"], spec["function"])
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(ctx, **spec.get("options", {}))
        if rank == 0:
            if not isinstance(result, TrainResult):
                raise TypeError(f"rank function {spec['function']!r} returned "
                                f"{'None' if result is None else 'a ' + type(result).__name__} on rank 0, not a "
                                "TrainResult: return ctx.train(...) (or ctx.observed(...))")
            seen = list(dict.fromkeys((w.category.__name__, str(w.message)) for w in caught))[:50]
            tmp = out / "result.json.part"
            tmp.write_text(json.dumps({"summary": result.summary(), "warnings": seen}, default=str))
            tmp.rename(out / "result.json")
        dist.barrier()  # every rank has finished before any leaves
    except BaseException as exc:
        tmp = out / f"rank{rank}.error.part"
        tmp.write_text(json.dumps({"rank": rank, "type": type(exc).__name__,
                                   "mro": [c.__name__ for c in type(exc).__mro__], "message": str(exc),
                                   "traceback": traceback.format_exc()[-3000:], "time": time.time()}))
        tmp.rename(out / f"rank{rank}.error")
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def launch(spec_path: str, nproc: int, context_cls: type) -> None:
    """Run the ranks with torchrun's launcher; returns when they have all finished (a failed rank's error
    file says why; torchrun's ChildFailedError is then raised, which ctx.torchrun replaces by the rank's
    own exception)."""

    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser
    # The agent's logs go beside the spec, in the case's work folder (removed with it): by default torchrun
    # makes a torchelastic_* folder in $TMPDIR and leaves it there.
    log_dir = Path(spec_path).resolve().parent / "torchrun-logs"
    args = get_args_parser().parse_args(["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}",
                                         "--max-restarts=0", "--monitor-interval=0.1", "--start-method=fork",
                                         f"--log-dir={log_dir}", "benchsuite-rank", spec_path])
    # As torch.distributed.run.run() does for --standalone: c10d rendezvous on a free local port.
    args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    config, _, _ = config_from_args(args)
    config.start_method = "fork"
    entry = functools.update_wrapper(functools.partial(_rank, context_cls), _rank)  # the agent logs its __name__
    elastic_launch(config=config, entrypoint=entry)(spec_path)


def raise_rank_error(err: dict, log_tail: str = "") -> None:
    """Raise a rank's exception again in the scenario process, as a class with the rank's class names
    (its mro, down to the nearest built-in exception), so that a symptom's ``exception=`` and ``message=``
    match it as they would in one process. The rank's traceback is the cause."""
    mro = [n for n in (err.get("mro") or [err.get("type") or "RuntimeError"]) if n != "object"]

    def builtin(name):
        c = getattr(builtins, name, None)
        return c if isinstance(c, type) and issubclass(c, BaseException) else None

    at = next((i for i, n in enumerate(mro) if builtin(n)), None)
    cls = builtin(mro[at]) if at is not None else RuntimeError
    for name in reversed(mro[:at] if at is not None else mro[:1]):
        cls = type(name, (cls,), {"__module__": "benchsuite.rank"})
    raise cls(err.get("message", "")) from RuntimeError(
        f"rank {err.get('rank')} traceback:\n{err.get('traceback', '')}" + (f"\n{log_tail}" if log_tail else ""))
