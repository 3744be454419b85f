"""Bridge to benchsuite._core: builds the tensor table and calls the CPU or CUDA scanner."""
from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

from ..notices import ScannerWarning

try:  # the fallback path must work when the extension was not built
    from benchsuite import _core  # type: ignore[attr-defined]  # the compiled extension: mypy sees no module
    IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - exercised by the fallback test through a subprocess
    _core = None
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

_DTYPE_CODES: dict = {}


def dtype_codes() -> dict[torch.dtype, int]:
    """Dtype codes understood by the core (csrc/gradscan.h), built on first use (torch is imported then)."""
    if not _DTYPE_CODES:
        import torch
        _DTYPE_CODES.update({torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3})
    return _DTYPE_CODES

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, ScannerWarning, stacklevel=3)


def available() -> bool:
    return _core is not None


class TableCache:
    """The int64 [n,4] table of a list of tensors ([address, numel, dtype code, first CUDA chunk]), rebuilt
    only when an address, a size or a dtype changed: between steps gradients usually keep their storage
    (or get it back from torch's caching allocator), so most scans compare one list and build nothing."""

    __slots__ = ("rows", "table", "total")

    def __init__(self):
        self.rows: list | None = None
        self.table: torch.Tensor | None = None
        self.total = 0

    def update(self, tensors: list[torch.Tensor]) -> bool:
        """Bring the table up to date for ``tensors``; True when it was rebuilt (and checked)."""
        import torch
        codes = dtype_codes()
        rows = [(t.data_ptr(), t.numel(), codes[t.dtype]) for t in tensors]
        if rows == self.rows:
            return False
        chunk = CHUNK
        first, table = 0, []
        for ptr, numel, code in rows:
            table.append((ptr, numel, code, first))
            first += (numel + chunk - 1) // chunk
        self.table = torch.tensor(table, dtype=torch.int64).reshape(len(rows), 4)
        _core.check_table(self.table.data_ptr(), len(rows), first)
        self.rows, self.total = rows, first
        return True


CHUNK = int(_core.CUDA_CHUNK_ELEMS) if _core is not None else 1 << 16
_cpu_tables: dict[int, TableCache] = {}


def scan_cpu(tensors: list[torch.Tensor], num_threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts int64 [n,4] and stats float64 [n,2] of dense host tensors (contiguous spans)."""
    import torch
    n = len(tensors)
    counts = torch.zeros((n, 4), dtype=torch.int64)
    stats = torch.zeros((n, 2), dtype=torch.float64)
    if n:
        cache = _cpu_tables.get(threading.get_ident())
        if cache is None:
            cache = _cpu_tables[threading.get_ident()] = TableCache()
            if len(_cpu_tables) > 64:  # threads come and go: keep the map small
                _cpu_tables.clear()
                _cpu_tables[threading.get_ident()] = cache
        cache.update(tensors)
        assert cache.table is not None  # update() built it (n > 0)
        threads = num_threads if num_threads is not None else torch.get_num_threads()
        _core.scan_cpu(cache.table.data_ptr(), n, counts.data_ptr(), stats.data_ptr(), int(threads))
    return counts, stats
