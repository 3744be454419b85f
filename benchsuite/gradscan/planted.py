"""Planted values: tensors whose statistics are known, for the scanner's self-checks.

One generator serves three users: the self-check that the first CUDA scan of a process runs on each
device (``self_check``, small), ``benchsuite selftest`` (``run_selftest``: the full suite on every backend
present), and the tests, which run the same suite through the kernel's source on the CPU.

The reference is computed with NumPy in float64 from the raw bits (bfloat16 decoded by hand), so it is
independent of torch's kernels and of the scanner: torch's own statistics are one more backend checked.
"""
from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

CHUNK = 1 << 16   # kCudaChunkElems (csrc/gradscan_abi.h)
THREADS = 256     # kCudaThreads
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
_INT = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
        torch.float64: torch.int64}


def bits(values: list[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor from raw bit patterns (NaN payloads, subnormals, signed zeros)."""
    itype = _INT[dtype]
    width = torch.iinfo(itype).bits
    signed = [v - (1 << width) if v >= 1 << (width - 1) else v for v in values]
    return torch.tensor(signed, dtype=itype).view(dtype)


def specials(dtype: torch.dtype) -> dict[str, list[int]]:
    """Bit patterns of each kind of special value of ``dtype``."""
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
        out = []
        for t, off in zip(self.tensors, self.offsets):
            buf = torch.empty(t.numel() + off, dtype=t.dtype, device=device)
            view = buf[off:]
            view.copy_(t.to(device))
            out.append(view)
        return out


def full_suite(seed: int = 1, offsets=(0, 1, 2, 3)) -> Suite:
    """Every dtype; sizes at vector, unrolled-block and chunk edges; offsets 0-3; special tensors."""
    g = torch.Generator().manual_seed(seed)
    s = Suite()
    s.add(torch.zeros(0), label="empty at start")
    for dtype in DTYPES:
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
    g = torch.Generator().manual_seed(20261201)
    s = Suite()
    for dtype in DTYPES:
        s.add(planted(2 * CHUNK + 2 * THREADS * vec(dtype) + 3, dtype, g), 1, f"{dtype} planted, offset 1")
        s.add(torch.zeros(0, dtype=dtype), label=f"{dtype} empty")
        sp = specials(dtype)
        s.add(bits([v for vals in sp.values() for v in vals] * 37, dtype), 0, f"{dtype} specials")
    return s


def reference(t: torch.Tensor) -> tuple:
    """(nan, posinf, neginf, zero, sumsq, absmax) in NumPy float64 from the raw bits."""
    raw = t.detach().cpu().contiguous().view(_INT[t.dtype]).numpy()
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


def _cuda_rows(views: list[torch.Tensor], device: torch.device) -> list[tuple]:
    """Run the kernel itself over ``views`` (all on ``device``) and read the results back."""
    from . import _cuda
    dense = [v for v in views if v.numel()]
    words = _cuda.launch(dense, device).cpu() if dense else torch.zeros(0, dtype=torch.int64)
    return _rows(views, *_cuda.split(words, len(dense)))


def _rows(views: list[torch.Tensor], counts: torch.Tensor, stats: torch.Tensor) -> list[tuple]:
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


def self_check(device: torch.device) -> dict:
    """The kernel on ``device`` against the reference, over ``probe_suite``: {"ok", "reason", "seconds"}."""
    t0 = time.perf_counter()
    suite = probe_suite()
    try:
        views = suite.placed(device)
        got = _cuda_rows(views, device)
        bad = mismatches(suite.labels, got, [reference(t) for t in suite.tensors])
    except Exception as exc:  # a failed launch or copy: the kernel is not used
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0}
    return {"ok": not bad, "reason": (f"{len(bad)} of {len(views)} probe tensors differ from the reference, "
                                      f"first: {bad[0]}") if bad else None,
            "tensors": len(views), "seconds": round(time.perf_counter() - t0, 3)}


# ----------------------------------------------------------------------------------------------------
# benchsuite selftest

def _backend_rows(name: str, suite: Suite) -> tuple[list[tuple] | None, str | None]:
    from . import _native
    from ._oracle import tensor_stats
    if name == "cpu-core":
        if not _native.available():
            return None, f"benchsuite._core is not available ({_native.IMPORT_ERROR})"
        views = suite.placed("cpu")
        dense = [v for v in views if v.numel()]
        counts, stats = _native.scan_cpu(dense)
        return _rows(views, counts, stats), None
    if name == "torch-cpu":
        return [tensor_stats(v) for v in suite.placed("cpu")], None
    kind, _, index = name.partition(":")
    device = torch.device("cuda", int(index))
    if kind == "torch-cuda":
        return [tensor_stats(v) for v in suite.placed(device)], None
    from . import _cuda
    st = _cuda.device_state(int(index), check=False)
    if not st.ready:
        return None, st.error
    return _cuda_rows(suite.placed(device), device), None


def run_selftest(quick: bool = False) -> dict:
    """The planted suite on every backend present, each against the NumPy reference."""
    from .. import info as info_mod
    suite = probe_suite() if quick else full_suite()
    want = [reference(t) for t in suite.tensors]
    backends = ["cpu-core", "torch-cpu"]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(gpus):
        backends += [f"cuda-kernel:{i}", f"torch-cuda:{i}"]
    results = []
    for name in backends:
        t0 = time.perf_counter()
        try:
            rows, why = _backend_rows(name, suite)
        except Exception as exc:
            rows, why = None, f"{type(exc).__name__}: {exc}"
        entry = {"backend": name, "seconds": round(time.perf_counter() - t0, 3)}
        if rows is None:
            entry.update(status="failed", reason=why)
        else:
            bad = mismatches(suite.labels, rows, want)
            entry.update(status="agrees" if not bad else "differs", mismatches=len(bad), examples=bad[:5])
        results.append(entry)
    ok = all(r["status"] == "agrees" for r in results)
    facts = info_mod.collect()
    return {"ok": ok, "tensors": len(suite.tensors), "elements": sum(t.numel() for t in suite.tensors),
            "backends": results,
            "not_checked": [] if gpus else ["the CUDA kernel: no GPU is visible to torch here"],
            "facts": {"python": sys.version.split()[0], "platform": platform.platform(),
                      "packages": facts["packages"], "extension": facts["extension"], "cuda": facts.get("cuda"),
                      "device": facts["device"]}}


def render_selftest(result: dict) -> str:
    """The verdict first, then each backend, then the facts a bug report needs."""
    lines = [f"selftest: {'PASS' if result['ok'] else 'FAIL'}: {result['tensors']} planted tensors "
             f"({result['elements']:,} elements) on {len(result['backends'])} backend(s), each against a NumPy "
             "float64 reference", ""]
    for b in result["backends"]:
        if b["status"] == "failed":
            lines.append(f"  {b['backend']:<16} FAILED  {b['reason']}")
        elif b["status"] == "differs":
            lines.append(f"  {b['backend']:<16} DIFFERS in {b['mismatches']} tensor(s), e.g. {b['examples'][0]}")
        else:
            lines.append(f"  {b['backend']:<16} agrees  ({b['seconds']:.2f} s)")
    for what in result["not_checked"]:
        lines.append(f"  not checked: {what}")
    f = result["facts"]
    ext = f["extension"]
    cuda = f.get("cuda") or {}
    lines += ["", "for a bug report:", f"  python {f['python']} on {f['platform']}",
              "  " + ", ".join(f"{k} {v}" for k, v in f["packages"].items() if v),
              f"  benchsuite._core: {ext.get('version', 'not importable')} ({ext.get('compiler', ext.get('error'))}); "
              f"fatbin: {ext.get('fatbin_architectures') or 'none'}",
              "  kernel routes: " + ("; ".join(f"{r['kind']} {r.get('version') or r.get('nvcc')} (driver >= "
                                               f"{r['driver_floor']})" for r in cuda.get("routes", [])) or "none"),
              f"  NVIDIA driver: {cuda.get('driver_release') or cuda.get('driver_error') or 'unknown'}"
              + (f" (CUDA {cuda['driver_cuda']})" if cuda.get("driver_cuda") else "")]
    for d in f["device"].get("devices", []):
        lines.append(f"  cuda:{d['index']}: {d['name']} sm_{d['capability'].replace('.', '')}")
    return "\n".join(lines)
