"""The CUDA scanner executed on the CPU: csrc/gradscan_cuda.cu compiled as C++ against tests/cudaemu.

Every test builds csrc/ as it stands (so an edit to the kernel is what gets tested), runs the kernel
with one fiber per CUDA thread under several schedules, under ASan+UBSan and under TSan, and compares
it with the torch oracle and with the CPU core built from the same tree. Binaries are cached by a
hash of their sources and flags in $BENCHSUITE_CUDAEMU_CACHE (default ~/.cache/benchsuite/cudaemu).
BENCHSUITE_CSRC points the tests at another copy of csrc/ (the mutation script uses it).
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from benchsuite.gradscan._oracle import tensor_stats

pytestmark = pytest.mark.cudaemu

ROOT = Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cudaemu"
CSRC = Path(os.environ.get("BENCHSUITE_CSRC", ROOT / "csrc")).resolve()
CACHE = Path(os.environ.get("BENCHSUITE_CUDAEMU_CACHE", Path.home() / ".cache" / "benchsuite" / "cudaemu"))
CXX = os.environ.get("CXX", "g++")

CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
DTYPES = list(CODES)
CHUNK = 1 << 16  # kCudaChunkElems
THREADS = 256    # kThreads of the kernel
SCHEDULES = ["inorder", "reverse", "random:20261124", "starve:0", "starve:32"]

COMMON = ["-std=c++17", "-Wall", "-Wno-unknown-pragmas", "-Werror=strict-aliasing", "-Wstrict-aliasing",
          "-fopenmp-simd", "-fno-trapping-math", "-pthread", "-DBENCHSUITE_WITH_CUDA=1",
          f"-I{EMU / 'include'}", f"-I{CSRC}"]
VARIANTS = {
    "plain": ["-O2"],
    "asan": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
}
PROGRAMS = {
    "driver": [EMU / "driver.cpp", EMU / "cudaemu.cpp", CSRC / "gradscan_cpu.cpp"],
    "selftest": [EMU / "selftest.cpp", EMU / "cudaemu.cpp"],
}

if shutil.which(CXX) is None or platform.machine() != "x86_64":
    pytest.skip("cudaemu needs g++ on x86-64", allow_module_level=True)

_lock = threading.Lock()


def _source_hash(flags: list[str]) -> str:
    h = hashlib.sha256()
    files = sorted(CSRC.glob("*")) + sorted(EMU.glob("*.cpp")) + sorted(EMU.glob("*.h")) + sorted(EMU.glob("include/*.h"))
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update("\0".join(flags).encode())
    h.update(subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:20]


def build(program: str, variant: str = "plain") -> Path:
    """The program compiled from the current sources, from the cache when its hash is there."""
    flags = COMMON + VARIANTS[variant]
    exe = CACHE / f"{program}-{variant}-{_source_hash(flags)}"
    with _lock:
        if not exe.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            tmp = exe.with_name(f"{exe.name}.tmp{os.getpid()}")
            cmd = [CXX, *flags, *map(str, PROGRAMS[program]), "-o", str(tmp)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                if variant != "plain" and "cannot find" in r.stderr and "san" in r.stderr:
                    pytest.skip(f"{variant} runtime not installed")
                pytest.fail(f"build of {program} ({variant}) failed:\n{r.stderr[-4000:]}")
            tmp.replace(exe)
            # Keep the cache small: the six newest builds of this program and variant.
            old = sorted(CACHE.glob(f"{program}-{variant}-*"), key=lambda p: p.stat().st_mtime)[:-6]
            for stale in old:
                if ".tmp" not in stale.name:
                    stale.unlink(missing_ok=True)
    return exe


# ------------------------------------------------------------------------------------------------
# Cases: tensors written for the driver, results read back.

class Case:
    def __init__(self):
        self.tensors: list[torch.Tensor] = []
        self.offsets: list[int] = []
        self.labels: list[str] = []
        self.codes: list[int] = []

    def add(self, t: torch.Tensor, offset: int = 0, label: str = "", code: int | None = None):
        self.tensors.append(t.contiguous().reshape(-1))
        self.offsets.append(offset)
        self.labels.append(label or f"{t.dtype} n={t.numel()} off={offset}")
        self.codes.append(CODES[t.dtype] if code is None else code)

    def write(self, path: Path):
        with open(path, "wb") as f:
            f.write(b"BSCASES1" + struct.pack("<q", len(self.tensors)))
            for t, off, code in zip(self.tensors, self.offsets, self.codes):
                raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
                f.write(struct.pack("<4q", code, t.numel(), off, len(raw)) + raw)


def parse(text: str) -> dict[str, tuple[str | None, list[tuple]]]:
    out: dict[str, tuple[str | None, list[tuple]]] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("backend "):
            _, name, status = line.split(" ", 2)
            out[name] = (None if status == "ok" else status[len("error "):], [])
        else:
            v = line.split()
            out[name][1].append((int(v[0]), int(v[1]), int(v[2]), int(v[3]), float(v[4]), float(v[5])))
    return out


def run_driver(exe: Path, case: Case | None, tmp_path: Path, schedules=("inorder",), workers=1, env=None,
               extra=(), timeout=float(os.environ.get("BENCHSUITE_CUDAEMU_TIMEOUT", "300"))):
    cases = tmp_path / "cases.bin"
    out = tmp_path / "out.txt"
    args = [str(exe), "--out", str(out), "--schedules", ",".join(schedules), "--workers", str(workers), *extra]
    if case is not None:
        case.write(cases)
        args += ["--cases", str(cases)]
    full_env = {**os.environ, "CUDAEMU_SMS": "4", **(env or {})}
    r = subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=timeout)
    return r, (parse(out.read_text()) if r.returncode == 0 else None)


def close(a: float, b: float, rel: float) -> bool:
    if math.isinf(a) or math.isinf(b) or math.isnan(a) or math.isnan(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= rel * max(abs(a), abs(b))


def check(case: Case, results, rel=1e-6):
    """Every backend against the oracle; every CUDA schedule against the CPU core."""
    oracle = [tensor_stats(t) for t in case.tensors]
    problems = []
    cpu_err, cpu = results["cpu"]
    assert cpu_err is None, cpu_err
    for backend, (err, rows) in results.items():
        assert err is None, f"{backend}: {err}"
        assert len(rows) == len(case.tensors)
        for i, (row, o) in enumerate(zip(rows, oracle)):
            ref = cpu[i]
            if row[:4] != tuple(o[:4]) or row[5] != o[5] or not close(row[4], o[4], rel):
                problems.append(f"{backend} vs oracle, #{i} {case.labels[i]}: got {row}, want {tuple(o)}")
            if row[:4] != ref[:4] or row[5] != ref[5] or not close(row[4], ref[4], rel):
                problems.append(f"{backend} vs cpu, #{i} {case.labels[i]}: got {row}, cpu {ref}")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:12])


# ------------------------------------------------------------------------------------------------
# Planted values.

def bits(values: list[int], dtype: torch.dtype) -> torch.Tensor:
    """A tensor from raw bit patterns (NaN payloads, subnormals, signed zeros)."""
    itype = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
             torch.float64: torch.int64}[dtype]
    width = torch.iinfo(itype).bits
    signed = [v - (1 << width) if v >= 1 << (width - 1) else v for v in values]
    return torch.tensor(signed, dtype=itype).view(dtype)


def specials(dtype: torch.dtype) -> dict[str, list[int]]:
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


def vec(dtype) -> int:
    return 16 // (torch.finfo(dtype).bits // 8)


def boundary_sizes(dtype) -> list[int]:
    v = vec(dtype)
    step = 4 * THREADS * v  # one unrolled iteration of the whole block
    return sorted({1, 2, v - 1, v, v + 1, 2 * v + 3, THREADS * v - 1, THREADS * v + 1, step - 1, step, step + v + 1,
                   CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7})


def planted_suite(seed: int = 1, offsets=(0, 1, 2, 3)) -> Case:
    g = torch.Generator().manual_seed(seed)
    case = Case()
    case.add(torch.zeros(0), label="empty at start")
    for dtype in DTYPES:
        sp = specials(dtype)
        for n in boundary_sizes(dtype):
            x = planted(n, dtype, g)
            for off in offsets:
                case.add(x, off, f"{dtype} planted n={n} off={off}")
        case.add(torch.zeros(0, dtype=dtype), label=f"{dtype} empty in the middle")
        for name, vals in sp.items():
            for v in vals:
                case.add(bits([v], dtype), 1, f"{dtype} one element {name} {v:#x}")
        nan = bits(sp["nan"], dtype).repeat(3000)
        case.add(nan, 0, f"{dtype} all NaN")
        case.add(nan[1:], 1, f"{dtype} all NaN offset")
        big = bits(sp["max"], dtype).repeat(2500)
        case.add(big, 0, f"{dtype} +-max")
        case.add(big, 3, f"{dtype} +-max offset 3")
        case.add(bits(sp["sub"], dtype).repeat(1111), 2, f"{dtype} subnormals")
        case.add(bits(sp["zero"], dtype).repeat(1500), 1, f"{dtype} +-0.0")
        if dtype in (torch.float32, torch.bfloat16, torch.float64):  # finite values whose squares overflow fp32
            case.add((torch.rand(4097, generator=g, dtype=torch.float64) * 3e38).to(dtype), 0, f"{dtype} ~1e38")
            case.add(torch.full((3000,), 2e19, dtype=dtype), 1, f"{dtype} 2e19")
        case.add((torch.randn(5000, generator=g, dtype=torch.float64) * 1e-30).to(dtype), 0, f"{dtype} ~1e-30")
    case.add(torch.zeros(0, dtype=torch.bfloat16), label="empty at end")
    return case


def many_small(count: int = 1200, seed: int = 7) -> Case:
    g = torch.Generator().manual_seed(seed)
    case = Case()
    for i in range(count):
        dtype = DTYPES[i % 4]
        n = int(torch.randint(0, 400, (1,), generator=g))
        case.add(planted(n, dtype, g), i % 3, f"small #{i} {dtype} n={n}")
    return case


# ------------------------------------------------------------------------------------------------
# Tests.

@pytest.mark.parametrize("mode", ["ok"])
def test_emulator_primitives(mode):
    exe = build("selftest")
    for schedule in SCHEDULES:
        r = subprocess.run([str(exe), mode, schedule, "2"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("ok"), (schedule, r.stdout, r.stderr)


@pytest.mark.parametrize("mode, message", [
    ("misaligned", "misaligned 16-byte load"),
    ("partial_barrier", "not reached by the whole block"),
    ("divergent_barrier", "waits at the __syncthreads at line"),
    ("absent_lane", "absent lane"),
    ("partial_warp", "not exist"),
    ("partial_mask", "full masks only"),
    ("deadlock", "deadlock"),
])
def test_emulator_aborts_on_faults(mode, message):
    exe = build("selftest")
    for schedule in ("inorder", "random:5"):
        r = subprocess.run([str(exe), mode, schedule], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and message in r.stderr, (schedule, r.returncode, r.stderr[-2000:])


def test_planted_values_every_schedule(tmp_path):
    """Every dtype; sizes at vector, unrolled-block and chunk edges; offsets 0-3; special tensors."""
    case = planted_suite()
    r, res = run_driver(build("driver"), case, tmp_path, schedules=SCHEDULES, workers=2)
    assert r.returncode == 0, r.stderr[-4000:]
    assert len(res) == 1 + len(SCHEDULES)
    check(case, res)


def test_many_small_tensors(tmp_path):
    case = many_small()
    r, res = run_driver(build("driver"), case, tmp_path, schedules=["inorder", "random:3", "starve:0"], workers=2)
    assert r.returncode == 0, r.stderr[-4000:]
    check(case, res)


def test_one_block_per_chunk(tmp_path):
    """Many blocks each owning one chunk: runs start and end at block boundaries inside one tensor."""
    g = torch.Generator().manual_seed(3)
    case = Case()
    for dtype in DTYPES:
        case.add(planted(7 * CHUNK + 5, dtype, g), 1)
    r, res = run_driver(build("driver"), case, tmp_path, schedules=["inorder", "random:9"], workers=2,
                        env={"CUDAEMU_SMS": "8"})
    assert r.returncode == 0, r.stderr[-4000:]
    check(case, res)


def test_asan_ubsan(tmp_path):
    case = planted_suite(seed=2, offsets=(0, 1, 3))
    r, res = run_driver(build("driver", "asan"), case, tmp_path, schedules=["inorder", "random:11"], workers=2)
    assert r.returncode == 0, r.stderr[-4000:]
    check(case, res)


def test_tsan_two_workers(tmp_path):
    """Tensors spread over many blocks published by two OS threads: a plain store would race."""
    g = torch.Generator().manual_seed(4)
    case = Case()
    for i, dtype in enumerate(DTYPES):
        case.add(planted(3 * CHUNK + 17, dtype, g), i % 2)
        case.add(planted(1000 + i, dtype, g), 0)
    case.add(many_small(60, seed=5).tensors[0])
    r, res = run_driver(build("driver", "tsan"), case, tmp_path, schedules=["inorder", "starve:0"], workers=2,
                        env={"CUDAEMU_SMS": "2", "TSAN_OPTIONS": "halt_on_error=1"}, extra=["--cpu-threads", "2"])
    assert r.returncode == 0, r.stderr[-4000:]
    assert "ThreadSanitizer" not in r.stderr
    check(case, res)


def test_unknown_dtype_is_an_error(tmp_path):
    case = Case()
    case.add(torch.ones(10))
    case.add(torch.full((100,), math.nan), code=7)
    r, res = run_driver(build("driver"), case, tmp_path, schedules=["inorder"])
    assert r.returncode == 0, r.stderr[-4000:]
    for backend, (err, _) in res.items():
        assert err is not None and "dtype" in err, (backend, err)


def test_bad_chunk_total_is_an_error(tmp_path):
    """scan_cuda checks the chunk column and total against the counts before any launch (K1)."""
    case = Case()
    case.add(torch.ones(70000))
    case.add(torch.ones(5))
    for delta in (1, -1):
        r, res = run_driver(build("driver"), case, tmp_path, extra=["--chunks-delta", str(delta), "--skip-cpu"])
        assert r.returncode == 0, r.stderr[-4000:]
        err, _ = res["cuda:inorder"]
        assert err is not None and "total_chunks" in err, err


def test_kernel_never_reports_an_unknown_dtype_clean(tmp_path):
    """Past the host check, the kernel itself flags a row with an unknown dtype code as non-finite."""
    case = Case()
    case.add(torch.ones(1000))
    case.add(torch.zeros(3000), code=9)
    case.add(torch.full((10,), 2.0, dtype=torch.float64))
    r, res = run_driver(build("driver"), case, tmp_path, schedules=["inorder", "random:2"], extra=["--raw-kernel", "--skip-cpu"])
    assert r.returncode == 0, r.stderr[-4000:]
    for backend, (err, rows) in res.items():
        assert err is None
        assert rows[0] == (0, 0, 0, 0, 1000.0, 1.0) and rows[2] == (0, 0, 0, 0, 40.0, 2.0), (backend, rows)
        assert rows[1][0] > 0, (backend, rows[1])  # reported as NaN: never "clean"


HUGE = 2**31 + 2**16 + 3


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BENCHSUITE_CUDAEMU_HUGE") != "1",
                    reason="77 s on 2 cores: set BENCHSUITE_CUDAEMU_HUGE=1 to run it")
def test_more_than_2_31_elements(tmp_path):
    """An fp16 tensor of 2^31 + 2^16 + 3 elements and its view offset by one element (zero pages)."""
    r, res = run_driver(build("driver"), None, tmp_path, schedules=["inorder"], workers=os.cpu_count() or 1,
                        extra=["--huge", str(HUGE)], timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    ss, am = 65504.0**2 + 4.0, 65504.0
    want = [(1, 0, 1, HUGE - 4, ss, am), (1, 0, 1, HUGE - 5, ss, am)]
    for backend, (err, rows) in res.items():
        assert err is None and rows == want, (backend, rows)


# ------------------------------------------------------------------------------------------------
# Static GPU checks (nvcc + cuobjdump/nvdisasm from PyPI; skipped where they are missing).

# Ceilings on SASS instructions per element of each dtype's vector loop (whole loop body, slow-path
# calls included) and of its fast path; docs/results/cuda-static.md has the measured figures.
LOOP_CEILING = {"float32": 12.5, "float16": 10, "bfloat16": 10, "float64": 25}
FAST_CEILING = {"float32": 8, "float16": 8, "bfloat16": 8, "float64": 16}


def test_static_gpu_figures():
    import sys
    sys.path.insert(0, str(EMU))
    import gpu_static
    missing = gpu_static.missing_tools()
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    key = _source_hash(["gpu_static", (EMU / "gpu_static.py").read_text()])
    cached = CACHE / f"static-{key}.json"
    if cached.exists():
        res = __import__("json").loads(cached.read_text())
    else:
        res = gpu_static.measure()
        CACHE.mkdir(parents=True, exist_ok=True)
        cached.write_text(__import__("json").dumps(res))
    for arch in ("sm_80", "sm_90"):
        r = res["archs"][arch]
        for fn, p in r["ptxas"].items():
            assert p.get("spill_stores", 0) == 0 and p.get("spill_loads", 0) == 0, (arch, fn, p)
        for name, loop in r["loops"].items():
            assert loop, (arch, name, "no vector loop found")
            assert loop["per_element"] <= LOOP_CEILING[name], (arch, name, loop)
            assert loop["fast_path_per_element"] <= FAST_CEILING[name], (arch, name, loop)
    assert res["archs"]["sm_90"]["loops"]["bfloat16"]["per_element"] <= 12  # the target
