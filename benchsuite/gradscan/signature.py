"""A compact per-parameter gradient signature: two gradients compared without holding both.

A 7B model's gradients do not fit twice in memory, so the benchmark grid (and ``compare(...,
method="signature")``) compares *signatures*. The signature of a gradient ``g`` (``numel`` elements,
read in its flat order) is

* ``sumsq``: the exact sum of squares of its finite values (float64), as the scanner reports it;
* ``nonfinite``: how many elements are NaN or +-Inf (those are left out of everything else);
* ``proj``: ``K`` (128) float64 sums of a signed count sketch:
  ``proj[b(t)] += sum_{i in tile t} s(i) * g[i]``, where the tiles are ``G`` consecutive elements,
  ``G = min(256, 2**floor(log2(max(1, numel // (4 K)))))`` (so that a tensor of at least 4K elements has
  at least 4K tiles), the sign ``s(i)`` is bit ``i % 64`` of ``splitmix64(SEED ^ (i // 64))`` (+1 for 0,
  -1 for 1), and the bucket ``b(t)`` is ``t`` while the tensor has no more tiles than buckets, else the
  low 7 bits of ``splitmix64(SEED2 ^ t)``.

Every quantity is a counter-based hash of the element's index: nothing of size numel x K is ever
formed, a tensor is read in chunks (one pass), and the same gradient gives the same signature on any
device and in any chunking. The sketch is linear, so ``proj(a) - proj(b) = proj(a - b)``, and
``E[sum_b proj_b(x)^2] = ||x||^2`` for any x. Two signatures give

* ``||a - b||^2 ~ sum_b (proj_b(a) - proj_b(b))^2`` (unbiased; relative standard deviation about
  ``sqrt(2 / K)`` = 12.5% when no handful of tiles holds most of the difference, i.e. about 6% on
  ``||a - b||``; exact for tensors of at most K elements);
* ``rel_error = ||a - b|| / ||a||`` and ``cosine = (||a||^2 + ||b||^2 - ||a - b||^2) / (2 ||a|| ||b||)``
  from the exact norms, so the cosine's error is about ``0.125 * rel_error^2 / 2``: negligible when two
  gradients agree, and a gradient that differs is never estimated to agree.

The error measured against exact comparison on a 134M-parameter model is in
docs/results/signature-error-cpu.md (``python -m benchsuite.bench.signature_error``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

K = 128                   # buckets (projections) per parameter; a power of two
MAX_TILE = 256            # elements per tile at most
SEED = 0x5EED_0F_B5C0FFEE  # sign words
SEED2 = 0x0B0C_4E75_1D0C_7A11  # tile buckets
CHUNK = 1 << 20           # elements read at a time (a multiple of 64 and of every tile size)

_M64 = (1 << 64) - 1


def _i64(x: int) -> int:
    """An unsigned 64-bit constant as the int64 torch stores."""
    x &= _M64
    return x - (1 << 64) if x >> 63 else x


_GOLDEN, _MIX1, _MIX2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _srl(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (arithmetic modulo 2**64, as the C reference)."""
    z = x + _GOLDEN
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def splitmix64_ref(x: int) -> int:
    """Pure-Python reference of ``splitmix64`` (unsigned result), for tests and other implementations."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def tile_size(numel: int, k: int = K) -> int:
    g = max(1, numel // (4 * k))
    return min(MAX_TILE, 1 << (g.bit_length() - 1))


@dataclass
class Signature:
    """The signature of one gradient (see the module's docstring); ``none`` when ``.grad`` is None."""

    numel: int
    none: bool = False
    nonfinite: int = 0
    sumsq: float = 0.0
    proj: list[float] = field(default_factory=list)

    @property
    def norm(self) -> float:
        return math.sqrt(self.sumsq)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Signature":
        return cls(**d)


def signature(t: torch.Tensor | None, *, scale: float = 1.0, k: int = K, numel: int | None = None,
              chunk: int | None = None) -> Signature:
    """The signature of tensor ``t`` (a gradient) times ``scale``; ``t=None`` gives a "no gradient" one.
    ``chunk``: elements read at a time (a multiple of 256; default ``CHUNK``): its transient memory is
    about 40 bytes per element."""
    if k < 1 or k & (k - 1):
        raise ValueError(f"k must be a power of two, not {k}")
    chunk = CHUNK if chunk is None else chunk
    if chunk < MAX_TILE or chunk % MAX_TILE:
        raise ValueError(f"chunk must be a positive multiple of {MAX_TILE}, not {chunk}")
    if t is None:
        return Signature(numel=numel or 0, none=True)
    if not (t.is_floating_point()):
        raise ValueError(f"signature() reads floating-point gradients, not {t.dtype}")
    if t.layout != torch.strided:
        t = t.to_dense()
    flat = t.detach().reshape(-1)
    n = flat.numel()
    g = tile_size(n, k)
    tiles = -(-n // g)
    dev = flat.device
    proj = torch.zeros(k, dtype=torch.float64, device=dev)
    sumsq = torch.zeros((), dtype=torch.float64, device=dev)
    bad = torch.zeros((), dtype=torch.int64, device=dev)
    bits = torch.arange(64, dtype=torch.int64, device=dev)
    for c0 in range(0, n, chunk):
        x = flat[c0:c0 + chunk].to(torch.float64)
        m = x.numel()
        fin = torch.isfinite(x)
        bad += m - fin.sum()
        x = torch.where(fin, x, 0.0)
        if scale != 1.0:
            x = x * scale
        sumsq += torch.dot(x, x)
        pad = (-m) % max(64, g)
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        words = splitmix64(torch.arange(c0 // 64, c0 // 64 + x.numel() // 64, dtype=torch.int64, device=dev) ^ _i64(SEED))
        neg = ((words.unsqueeze(1) >> bits) & 1).reshape(-1)  # bit j of word w: the sign of element 64w + j
        y = torch.where(neg.bool(), -x, x).view(-1, g).sum(1)
        t_idx = torch.arange(c0 // g, c0 // g + y.numel(), dtype=torch.int64, device=dev)
        keep = t_idx < tiles
        y, t_idx = y[keep], t_idx[keep]
        bucket = t_idx if tiles <= k else splitmix64(t_idx ^ _i64(SEED2)) & (k - 1)
        proj.index_add_(0, bucket, y)
    return Signature(numel=n, nonfinite=int(bad), sumsq=float(sumsq), proj=proj.cpu().tolist())


def signatures(pairs, *, scale: float = 1.0, k: int = K, chunk: int | None = None) -> dict[str, Signature]:
    """Signatures of the ``.grad`` of every (name, parameter) pair (``benchsuite.gradscan.named_trainable``)."""
    return {name: signature(p.grad, scale=scale, k=k, numel=p.numel(), chunk=chunk) for name, p in pairs}


def estimate(a: Signature, b: Signature) -> tuple[float, float]:
    """(rel_error, cosine) of b against a, estimated from their signatures (finite parts)."""
    if len(a.proj) != len(b.proj) or a.numel != b.numel:
        raise ValueError(f"signatures of different shapes: numel {a.numel} vs {b.numel}, "
                         f"K {len(a.proj)} vs {len(b.proj)}")
    d2 = sum((x - y) ** 2 for x, y in zip(a.proj, b.proj))
    return _metrics(a.sumsq, b.sumsq, d2)


def _metrics(na2: float, nb2: float, d2: float) -> tuple[float, float]:
    if na2 == 0.0 and nb2 == 0.0:
        return 0.0, 1.0
    if na2 == 0.0 or nb2 == 0.0:
        return (math.inf if na2 == 0.0 else 1.0), 0.0
    rel = math.sqrt(d2 / na2)
    cos = (na2 + nb2 - d2) / (2.0 * math.sqrt(na2 * nb2))
    return rel, max(-1.0, min(1.0, cos))
