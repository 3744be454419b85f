"""Planted values: tensors whose statistics are known, and their NumPy reference (see planted.py).

The pure half of the self-checks, with no scanner behind it: the CUDA route's first-use check (_cuda.py),
``benchsuite selftest`` (planted.py) and the tests all build their probes here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and NumPy are imported where they are used: the CLI loads this module at start-up
    import torch

CHUNK = 1 << 16   # kCudaChunkElems (csrc/gradscan_abi.h)
THREADS = 256     # kCudaThreads


def dtypes() -> list[torch.dtype]:
    """The dtypes the scanner reads (csrc/gradscan.h's codes 0-3)."""
    import torch
    return [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _int_type(dtype: torch.dtype) -> torch.dtype:
    """The integer dtype of the same width (a view of the raw bits)."""
    import torch
    return {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
            torch.float64: torch.int64}[dtype]


def bits(values: list[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor from raw bit patterns (NaN payloads, subnormals, signed zeros)."""
    import torch
    itype = _int_type(dtype)
    width = torch.iinfo(itype).bits
    signed = [v - (1 << width) if v >= 1 << (width - 1) else v for v in values]
    return torch.tensor(signed, dtype=itype).view(dtype)


def specials(dtype: torch.dtype) -> dict[str, list[int]]:
    """Bit patterns of each kind of special value of ``dtype``."""
    import torch
    if dtype == torch.float16:
        return dict(nan=[0x7e00, 0xfe00, 0x7c01, 0xffff], inf=[0x7c00], ninf=[0xfc00], max=[0x7bff, 0xfbff],
                    sub=[0x0001, 0x8001, 0x03ff, 0x0200], zero=[0x0000, 0x8000])
    if dtype == torch.bfloat16:
        return dict(nan=[0x7fc0, 0xffc0, 0x7f81, 0xffff], inf=[0x7f80], ninf=[0xff80], max=[0x7f7f, 0xff7f],
                    sub=[0x0001, 0x8001, 0x007f, 0x0040], zero=[0x0000, 0x8000])
    if dtype == torch.float32:
        return dict(nan=[0x7fc00000, 0xffc00000, 0x7f800001, 0xffffffff], inf=[0x7f800000], ninf=[0xff800000],
                    max=[0x7f7fffff, 0xff7fffff], sub=[0x00000001, 0x80000001, 0x007fffff, 0x00400000],
                    zero=[0x00000000, 0x80000000])
    return dict(nan=[0x7ff8000000000000, 0xfff8000000000000, 0x7ff0000000000001, 0xffffffffffffffff],
                inf=[0x7ff0000000000000], ninf=[0xfff0000000000000],
                max=[0x7fefffffffffffff, 0xffefffffffffffff],
                sub=[0x0000000000000001, 0x8000000000000001, 0x000fffffffffffff, 0x0008000000000000],
                zero=[0x0000000000000000, 0x8000000000000000])


def planted(n: int, dtype: torch.dtype, g: torch.Generator, scale: float = 3.0) -> torch.Tensor:
    """Random values with specials at the first, last and random positions."""
    import torch
    x = (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype)
    if n == 0:
        return x
    sp = specials(dtype)
    pool = bits(sp["nan"] + sp["inf"] + sp["ninf"] + sp["zero"] + sp["sub"], dtype)
    k = min(n, 3 + n // 5000)
    pos = torch.randint(0, n, (k,), generator=g)
    pos[0] = 0
    if k > 1:
        pos[1] = n - 1
    x[pos] = pool[torch.randint(0, len(pool), (k,), generator=g)]
    return x


def vec(dtype: torch.dtype) -> int:
    import torch
    return 16 // (torch.finfo(dtype).bits // 8)


def boundary_sizes(dtype: torch.dtype) -> list[int]:
    """Sizes at the kernel's vector, unrolled-block and chunk edges."""
    v = vec(dtype)
    step = 4 * THREADS * v  # one unrolled iteration of the whole block
    return sorted({1, 2, v - 1, v, v + 1, 2 * v + 3, THREADS * v - 1, THREADS * v + 1, step - 1, step, step + v + 1,
                   CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7})


@dataclass
class Suite:
    """Flat tensors, each placed ``offset`` elements into its buffer (a misaligned data pointer)."""

    tensors: list[torch.Tensor] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, t: torch.Tensor, offset: int = 0, label: str = "") -> None:
        self.tensors.append(t.contiguous().reshape(-1))
        self.offsets.append(offset)
        self.labels.append(label or f"{t.dtype} n={t.numel()} off={offset}")

    def placed(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The tensors on ``device``, each a view ``offset`` elements into a fresh buffer."""
        import torch
        out = []
        for t, off in zip(self.tensors, self.offsets):
            buf = torch.empty(t.numel() + off, dtype=t.dtype, device=device)
            view = buf[off:]
            view.copy_(t.to(device))
            out.append(view)
        return out


def full_suite(seed: int = 1, offsets=(0, 1, 2, 3)) -> Suite:
    """Every dtype; sizes at vector, unrolled-block and chunk edges; offsets 0-3; special tensors."""
    import torch
    g = torch.Generator().manual_seed(seed)
    s = Suite()
    s.add(torch.zeros(0), label="empty at start")
    for dtype in dtypes():
        sp = specials(dtype)
        for n in boundary_sizes(dtype):
            x = planted(n, dtype, g)
            for off in offsets:
                s.add(x, off, f"{dtype} planted n={n} off={off}")
        s.add(torch.zeros(0, dtype=dtype), label=f"{dtype} empty in the middle")
        for name, vals in sp.items():
            for v in vals:
                s.add(bits([v], dtype), 1, f"{dtype} one element {name} {v:#x}")
        nan = bits(sp["nan"], dtype).repeat(3000)
        s.add(nan, 0, f"{dtype} all NaN")
        s.add(nan[1:], 1, f"{dtype} all NaN offset")
        big = bits(sp["max"], dtype).repeat(2500)
        s.add(big, 0, f"{dtype} +-max")
        s.add(big, 3, f"{dtype} +-max offset 3")
        s.add(bits(sp["sub"], dtype).repeat(1111), 2, f"{dtype} subnormals")
        s.add(bits(sp["zero"], dtype).repeat(1500), 1, f"{dtype} +-0.0")
        if dtype in (torch.float32, torch.bfloat16, torch.float64):  # finite values whose squares overflow fp32
            s.add((torch.rand(4097, generator=g, dtype=torch.float64) * 3e38).to(dtype), 0, f"{dtype} ~1e38")
            s.add(torch.full((3000,), 2e19, dtype=dtype), 1, f"{dtype} 2e19")
        s.add((torch.randn(5000, generator=g, dtype=torch.float64) * 1e-30).to(dtype), 0, f"{dtype} ~1e-30")
    s.add(torch.zeros(0, dtype=torch.bfloat16), label="empty at end")
    return s


def probe_suite() -> Suite:
    """The small probe of the first-use self-check: each dtype over several chunks (so several blocks),
    offset by one element, every special value, an empty tensor between."""
    import torch
    g = torch.Generator().manual_seed(20261201)
    s = Suite()
    for dtype in dtypes():
        s.add(planted(2 * CHUNK + 2 * THREADS * vec(dtype) + 3, dtype, g), 1, f"{dtype} planted, offset 1")
        s.add(torch.zeros(0, dtype=dtype), label=f"{dtype} empty")
        sp = specials(dtype)
        s.add(bits([v for vals in sp.values() for v in vals] * 37, dtype), 0, f"{dtype} specials")
    return s


def reference(t: torch.Tensor) -> tuple:
    """(nan, posinf, neginf, zero, sumsq, absmax) in NumPy float64 from the raw bits."""
    import numpy as np
    import torch
    raw = t.detach().cpu().contiguous().view(_int_type(t.dtype)).numpy()
    with np.errstate(invalid="ignore"):  # NaN payloads widen to NaN, which is the point
        if t.dtype == torch.bfloat16:
            x = (raw.astype(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            x = raw.view({torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}[t.dtype])
            x = x.astype(np.float64)
    if x.size == 0:
        return (0, 0, 0, 0, 0.0, 0.0)
    finite = np.isfinite(x)
    a = np.where(finite, np.abs(x), 0.0)
    with np.errstate(over="ignore"):
        ss = float(np.sum(a * a))
    return (int(np.isnan(x).sum()), int(np.isposinf(x).sum()), int(np.isneginf(x).sum()), int((x == 0).sum()),
            ss, float(a.max()))


def _close(a: float, b: float, rel: float) -> bool:
    if math.isinf(a) or math.isinf(b) or math.isnan(a) or math.isnan(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= rel * max(abs(a), abs(b))


def mismatches(labels: list[str], got: list[tuple], want: list[tuple], rel: float = 1e-6) -> list[str]:
    """Rows where counts or max differ at all, or the sum of squares by more than ``rel``."""
    out = []
    for label, g, w in zip(labels, got, want):
        g = tuple(g)
        if tuple(g[:4]) != tuple(w[:4]) or g[5] != w[5] or not _close(g[4], w[4], rel):
            out.append(f"{label}: got {g}, want {tuple(w)}")
    if len(got) != len(want):
        out.append(f"{len(got)} results for {len(want)} tensors")
    return out


def rows(views: list[torch.Tensor], counts: torch.Tensor, stats: torch.Tensor) -> list[tuple]:
    """One result row per view, from the rows of its non-empty views (empty ones: all zero)."""
    it = iter(zip(counts.tolist(), stats.tolist()))
    out = []
    for v in views:
        if v.numel():
            c, s = next(it)
            out.append((*c, *s))
        else:
            out.append((0, 0, 0, 0, 0.0, 0.0))
    return out
