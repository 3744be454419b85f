"""A compact per-parameter gradient signature: two gradients compared without holding both.

A 7B model's gradients do not fit twice in memory, so the benchmark grid (and ``compare(...,
method="signature")``) compares *signatures*. The signature of a gradient ``g`` (``numel`` elements,
read in its flat order) is

* ``sumsq``: the exact sum of squares of its finite values (float64), as the scanner reports it;
* ``nonfinite``: how many elements are NaN or +-Inf (those are left out of everything else);
* ``proj``: ``K`` = 128 float64 buckets of a signed count sketch, ``proj[b(i)] += s(i) * g[i]``.

The sketch is defined by the element's index alone, in the terms of the CUDA kernel's pass
(csrc/gradscan_abi.h), which computes it in the same read as the scan (``scan(..., signature=True)``
on CUDA tensors). For element ``i``:

* chunk ``c = i >> 16``; group ``q = (i & 0xffff) >> 2`` (4 elements); position ``p = i & 3``;
  slot ``s = q & 255``; ``m = q >> 8`` (0..63); tile ``T = 256 c + s`` (so a tile is 256 elements,
  every 256th group of one chunk);
* sign ``s(i) = -1`` when bit ``m >> 1`` of ``word(T, m & 1)`` is set, else +1, with
  ``word(T, j) = lowbias32((2T + j) mod 2**32 ^ SEED)``: the 4 elements of a group share a sign and
  lie in 4 different buckets, and elements of one bucket have independent signs;
* bucket ``b(i) = 4 class(T) + ((p + s) & 3)``, with ``class(T) = (T + (((T >> 5) * MUL mod 2**32)
  >> 27)) & 31``: 32 consecutive tiles take the 32 classes in turn from a hashed offset.

Every quantity is a counter-based hash of the index: nothing of size numel x K is formed, a tensor is
read in chunks (one pass), and the same gradient gives the same signature on any device and in any
chunking, up to float rounding (the kernel sums in float32 within a chunk). The sketch is linear, so
``proj(a) - proj(b) = proj(a - b)``, and ``E[sum_b proj_b(x)^2] = ||x||^2`` for any x. Two signatures
give

* ``||a - b||^2 ~ sum_b (proj_b(a) - proj_b(b))^2`` (unbiased; relative standard deviation about
  ``sqrt(2 / K)`` = 12.5% when no handful of buckets holds most of the difference, i.e. about 6% on
  ``||a - b||``; exact for tensors of at most K elements, whose elements all have buckets of their own);
* ``rel_error = ||a - b|| / ||a||`` and ``cosine = (||a||^2 + ||b||^2 - ||a - b||^2) / (2 ||a|| ||b||)``
  from the exact norms, so the cosine's error is about ``0.125 * rel_error^2 / 2``: negligible when two
  gradients agree, and a gradient that differs is never estimated to agree.

The error measured against exact comparison on a 134M-parameter model is in
docs/results/signature-error-cpu.md (``python experiments/signature_error.py``).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

from . import _cuda

VERSION = 2               # the definition above; signatures of other versions are not compared
K = 128                   # buckets per parameter (kSigK)
SEED = 0x5EEDB5C0         # kSigSeed
MUL = 0x9E3779B1          # kSigClassMul
CHUNK_ELEMS = 1 << 16     # the kernel's chunk (kCudaChunkElems)
CHUNK = 1 << 20           # elements read at a time (a multiple of CHUNK_ELEMS)

_M32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding 32-bit values (the products wrap modulo 2**64: low bits exact)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def mix32_ref(x: int) -> int:
    """Pure-Python lowbias32, for tests and other implementations."""
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def word(tile: torch.Tensor, parity: int) -> torch.Tensor:
    return mix32(((2 * tile + parity) & _M32) ^ SEED)


def tile_class(tile: torch.Tensor) -> torch.Tensor:
    return ((tile & _M32) + ((((tile >> 5) * MUL) & _M32) >> 27)) & 31


def bucket_and_sign_ref(i: int) -> tuple[int, int]:
    """Element i's bucket and sign, straight from the definition (for tests)."""
    c, r = i >> 16, i & 0xFFFF
    q, p = r >> 2, r & 3
    s, m = q & 255, q >> 8
    t = 256 * c + s
    w = mix32_ref(((2 * t + (m & 1)) & _M32) ^ SEED)
    cls = ((t & _M32) + ((((t >> 5) * MUL) & _M32) >> 27)) & 31
    return 4 * cls + ((p + s) & 3), -1 if (w >> (m >> 1)) & 1 else 1


@dataclass
class Signature:
    """The signature of one gradient (see the module's docstring); ``none`` when ``.grad`` is None."""

    numel: int
    none: bool = False
    version: int = VERSION
    nonfinite: int = 0
    sumsq: float = 0.0
    proj: list[float] = field(default_factory=list)

    @property
    def norm(self) -> float:
        return math.sqrt(self.sumsq)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Signature:
        return cls(**{"version": 1, **d})  # files written before the version field hold version 1


def signature(t: torch.Tensor | None, *, scale: float = 1.0, k: int = K, numel: int | None = None,
              chunk: int | None = None) -> Signature:
    """The signature of tensor ``t`` (a gradient) times ``scale``; ``t=None`` gives a "no gradient" one.
    ``chunk``: elements read at a time (a multiple of 65536; default ``CHUNK``): its transient memory is
    about 30 bytes per element."""
    import torch
    if k != K:
        raise ValueError(f"the signature has {K} buckets, not {k}")
    chunk = CHUNK if chunk is None else chunk
    if chunk < CHUNK_ELEMS or chunk % CHUNK_ELEMS:
        raise ValueError(f"chunk must be a positive multiple of {CHUNK_ELEMS}, not {chunk}")
    if t is None:
        return Signature(numel=numel or 0, none=True)
    if not (t.is_floating_point()):
        raise ValueError(f"signature() reads floating-point gradients, not {t.dtype}")
    if t.layout != torch.strided:
        t = t.to_dense()
    flat = t.detach().reshape(-1)
    n = flat.numel()
    dev = flat.device
    proj = torch.zeros(K, dtype=torch.float64, device=dev)
    sumsq = torch.zeros((), dtype=torch.float64, device=dev)
    bad = torch.zeros((), dtype=torch.int64, device=dev)
    slots = torch.arange(256, dtype=torch.int64, device=dev)
    pos = torch.arange(4, dtype=torch.int64, device=dev)
    for c0 in range(0, n, chunk):
        x = flat[c0:c0 + chunk].to(torch.float64)
        m = x.numel()
        fin = torch.isfinite(x)
        bad += m - fin.sum()
        x = torch.where(fin, x, 0.0)
        if scale != 1.0:
            x = x * scale
        sumsq += torch.dot(x, x)
        pad = (-m) % 1024
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        rows = x.numel() // 1024                       # a row: 256 groups of 4, one per slot
        x = x.view(rows, 256, 4)
        r = torch.arange(rows, dtype=torch.int64, device=dev) + c0 // 1024
        c, mm = r >> 6, r & 63                          # chunk and m of each row
        chunks = torch.arange(int(c[0]), int(c[-1]) + 1, dtype=torch.int64, device=dev)
        tiles = (chunks.unsqueeze(1) * 256 + slots)    # [chunks, 256]
        words = torch.stack([word(tiles, 0), word(tiles, 1)])  # [parity, chunks, 256]
        ci = c - chunks[0]
        bits = (words[mm & 1, ci] >> (mm >> 1).unsqueeze(1)) & 1   # [rows, 256]
        signed = x * (1.0 - 2.0 * bits.to(torch.float64)).unsqueeze(2)
        per_tile = torch.zeros(chunks.numel(), 256, 4, dtype=torch.float64, device=dev)
        per_tile.index_add_(0, ci, signed)             # sum over m within each chunk
        bucket = 4 * tile_class(tiles).unsqueeze(2) + ((pos + slots.unsqueeze(1)) & 3)  # [chunks, 256, 4]
        proj.index_add_(0, bucket.reshape(-1), per_tile.reshape(-1))
    return Signature(numel=n, nonfinite=int(bad), sumsq=float(sumsq), proj=proj.cpu().tolist())


def signatures(pairs, *, scale: float = 1.0, k: int = K, chunk: int | None = None) -> dict[str, Signature]:
    """Signatures of the ``.grad`` of every (name, parameter) pair (``benchsuite.gradscan.named_trainable``).
    Gradients on a CUDA device where the scanner's kernel works go through its signature pass, all of a
    device's in one launch (``BENCHSUITE_SIGNATURE=torch`` forces the torch path); the rest through
    ``signature``."""
    pairs = list(pairs)
    out = _on_cuda_kernel(pairs, scale)
    for name, p in pairs:
        if name not in out:
            out[name] = signature(p.grad, scale=scale, k=k, numel=p.numel(), chunk=chunk)
    return {name: out[name] for name, _ in pairs}


def _on_cuda_kernel(pairs, scale: float) -> dict[str, Signature]:
    import torch
    if os.environ.get("BENCHSUITE_SIGNATURE", "").lower() == "torch" or not torch.cuda.is_available():
        return {}
    by_device: dict[int, list] = {}
    for name, p in pairs:
        g = p.grad
        # The kernel's vector loop takes 16-byte aligned fp32/fp16/bf16 storage; others (a view into a flat
        # buffer off alignment, fp64) would go element by element there, so torch takes them.
        if (g is not None and g.is_cuda and g.layout == torch.strided and g.numel() and g.is_contiguous()
                and g.dtype in (torch.float32, torch.float16, torch.bfloat16) and g.data_ptr() % 16 == 0):
            by_device.setdefault(g.device.index, []).append((name, g))
    if not by_device:
        return {}
    out = {}
    for index, items in by_device.items():
        if signature_kernel_error(index) is not None:
            continue
        words, sig = launch_signatures([g for _, g in items], torch.device("cuda", index))
        counts, stats = _cuda.split(words, len(items))
        for i, (name, g) in enumerate(items):
            out[name] = Signature(numel=g.numel(), nonfinite=int(counts[i, :3].sum()),
                                  sumsq=float(stats[i, 0]) * scale * scale, proj=(sig[i] * scale).tolist())
    return out


def estimate(a: Signature, b: Signature) -> tuple[float, float]:
    """(rel_error, cosine) of b against a, estimated from their signatures (finite parts)."""
    if a.version != b.version and not (a.none or b.none):
        raise ValueError(f"signatures of different definitions (version {a.version} vs {b.version}): "
                         "take both with the same benchsuite")
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


# ----------------------------------------------------------------------------------------------------
# The signature pass: one launch of benchsuite_gradscan_sig over a list of tensors (once per gradient
# comparison, not per step, so no plan is kept), and its first-use check against signature.py.

def launch_signatures(tensors: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan ``tensors`` (dense, non-empty, on ``device``) with the signature pass and wait for it: (host n*6
    result words, host float64 [n, SIG_K] signature buckets)."""
    import torch
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = int(torch.cuda.current_stream(index).cuda_stream)
    tables = _cuda._native.TableCache()
    tables.update(tensors)
    assert tables.table is not None  # a fresh cache: update() built it
    n = len(tensors)
    dev_table = tables.table.to(device)
    acc = torch.zeros(n * 6, dtype=torch.int64, device=device)
    sig = torch.zeros((n, _cuda._core.SIG_K), dtype=torch.float64, device=device)
    _cuda._core.cuda_scan(index, handle, dev_table.data_ptr(), n, tables.total, acc.data_ptr(), 0, 0, sig.data_ptr())
    return acc.cpu(), sig.cpu()


def _sig_probe(device: torch.device) -> list[torch.Tensor]:
    """Every path of the signature pass: the vector loop (aligned fp32/bf16/fp16 over a chunk boundary, a
    partial last chunk, NaN and Inf in a vector), the scalar path (an offset view, fp64), tiny tensors."""
    import torch
    g = torch.Generator().manual_seed(19)
    base = [torch.randn(70_001, generator=g), torch.randn(66_000, generator=g).bfloat16(),
            torch.randn(3_001, generator=g).half(), torch.randn(1_500, generator=g).double(),
            torch.randn(7, generator=g)]
    base[0][5] = float("nan")
    base[1][9] = float("inf")
    out = [t.to(device) for t in base]
    out.append(out[0][3:])  # 12 bytes off 16-byte alignment
    return out


def sig_probe_errors(probe: list[torch.Tensor], buckets: torch.Tensor) -> list[float]:
    """Per probe tensor: the largest difference between the kernel's buckets (host [n, SIG_K]) and
    benchsuite.gradscan.signature's, over the typical bucket size sqrt(sum of squares / K)."""
    import torch
    out = []
    for i, t in enumerate(probe):
        ref = signature(t)
        scale = max((ref.sumsq / K) ** 0.5, 1e-30)
        out.append(float((buckets[i] - torch.tensor(ref.proj, dtype=torch.float64)).abs().max()) / scale)
    return out


_sig_checked: dict[int, str | None] = {}


def signature_kernel_error(index: int) -> str | None:
    """None when the signature pass can be used on device ``index`` (loaded, self-checked, and its first
    result agrees with benchsuite.gradscan.signature on a probe); else why not (warned once)."""
    import torch
    with _cuda._lock:
        if index in _sig_checked:
            return _sig_checked[index]
    st = _cuda.device_state(index)
    err = None if st.ready else st.error
    if err is None:
        try:
            probe = _sig_probe(torch.device("cuda", index))
            _, got = launch_signatures(probe, torch.device("cuda", index))
            for i, (t, e) in enumerate(zip(probe, sig_probe_errors(probe, got))):
                if not e <= 1e-4:
                    err = (f"its signature self-check on cuda:{index} failed (probe tensor {i}, {t.dtype}, "
                           f"{t.numel()} elements: off by {e:.3g} of its bucket scale)")
                    break
        except RuntimeError as exc:
            err = f"the signature pass failed on cuda:{index}: {exc}"
    if err is not None:
        _cuda.warn_once(f"cuda-sig{index}", f"benchsuite: the CUDA signature pass is not used on cuda:{index} ({err}); "
                                      "computing signatures with torch there (same numbers, slower)")
    with _cuda._lock:
        _sig_checked[index] = err
    return err
