"""Bridge to benchsuite._core: builds the tensor table and calls the CPU or CUDA scanner."""
from __future__ import annotations

import warnings

import torch

try:  # the fallback path must work when the extension was not built
    from benchsuite import _core
    IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised by the fallback test through a subprocess
    _core = None
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

# Dtype codes understood by the core (csrc/gradscan.h).
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def available() -> bool:
    return _core is not None


def cuda_available() -> bool:
    return _core is not None and bool(_core.HAS_CUDA)


def _table(tensors: list[torch.Tensor]) -> torch.Tensor:
    rows = [[t.data_ptr(), t.numel(), DTYPE_CODES[t.dtype], 0] for t in tensors]
    return torch.tensor(rows, dtype=torch.int64).reshape(len(tensors), 4)


def scan_cpu(tensors: list[torch.Tensor], num_threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts int64 [n,4] and stats float64 [n,2] of dense host tensors (contiguous spans)."""
    n = len(tensors)
    counts = torch.zeros((n, 4), dtype=torch.int64)
    stats = torch.zeros((n, 2), dtype=torch.float64)
    if n:
        table = _table(tensors)
        threads = num_threads if num_threads is not None else torch.get_num_threads()
        _core.scan_cpu(table.data_ptr(), n, counts.data_ptr(), stats.data_ptr(), int(threads))
    return counts, stats


def launch_cuda(tensors: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Enqueue the fused kernel on the current stream; returns device buffers (counts, stats, table).

    Nothing here waits for the GPU: the table travels through pinned memory with a non-blocking copy
    (torch keeps the pinned block alive until the copy is done) and the results stay on the device.
    """
    n = len(tensors)
    table = _table(tensors)
    chunk = int(_core.CUDA_CHUNK_ELEMS)
    nchunks = (table[:, 1] + (chunk - 1)) // chunk
    table[:, 3] = torch.cumsum(nchunks, 0) - nchunks
    total = int(nchunks.sum())
    counts = torch.zeros((n, 4), dtype=torch.int64, device=device)
    stats = torch.zeros((n, 2), dtype=torch.float64, device=device)
    dev_table = table.pin_memory().to(device, non_blocking=True)
    stream = torch.cuda.current_stream(device)
    # The host copy is checked (dtype codes, counts, chunk column) before the kernel is enqueued.
    _core.scan_cuda(table.data_ptr(), dev_table.data_ptr(), n, total, counts.data_ptr(), stats.data_ptr(),
                    device.index if device.index is not None else torch.cuda.current_device(),
                    int(stream.cuda_stream))
    return counts, stats, dev_table
