"""The CUDA scanner executed on the CPU: csrc/gradscan_kernel.cu compiled as C++ against tests/cudaemu.

Every test builds csrc/ as it stands (so an edit to the kernel is what gets tested), runs the kernel
with one fiber per CUDA thread under several schedules, under ASan+UBSan and under TSan, and compares
it with the torch oracle and with the CPU core built from the same tree. Binaries are cached by a
hash of their sources and flags in $BENCHSUITE_CUDAEMU_CACHE (default $BENCHSUITE_CACHE/cudaemu; under pytest
the tests' own cache, tests/conftest.py).
BENCHSUITE_CSRC points the tests at another copy of csrc/ (the mutation script uses it).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from benchsuite.gradscan._oracle import tensor_stats
from benchsuite.gradscan.planted import CHUNK, DTYPES, full_suite, planted
from benchsuite.harness.envs import cache_root

pytestmark = pytest.mark.cudaemu

ROOT = Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cudaemu"
CSRC = Path(os.environ.get("BENCHSUITE_CSRC", ROOT / "csrc")).resolve()
CACHE = Path(os.environ.get("BENCHSUITE_CUDAEMU_CACHE") or cache_root() / "cudaemu")
CXX = os.environ.get("CXX", "g++")

CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
SCHEDULES = ["inorder", "reverse", "random:20261124", "starve:0", "starve:32"]

COMMON = ["-std=c++17", "-Wall", "-Wno-unknown-pragmas", "-Werror=strict-aliasing", "-Wstrict-aliasing",
          "-fopenmp-simd", "-fno-trapping-math", "-pthread", "-DBENCHSUITE_WITH_CUDA=1",
          f"-I{EMU / 'include'}", f"-I{CSRC}"]
VARIANTS = {
    "plain": ["-O2"],
    "asan": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
    "shared": ["-O2", "-shared", "-fPIC"],
}
PROGRAMS = {
    "driver": [EMU / "driver.cpp", EMU / "cudaemu.cpp", CSRC / "gradscan_cpu.cpp"],
    "selftest": [EMU / "selftest.cpp", EMU / "cudaemu.cpp"],
    "libcuda": [EMU / "fake_libcuda.cpp", EMU / "cudaemu.cpp"],
}

if shutil.which(CXX) is None or platform.machine() != "x86_64":
    pytest.skip("cudaemu needs g++ on x86-64", allow_module_level=True)

_lock = threading.Lock()


def _source_hash(flags: list[str]) -> str:
    h = hashlib.sha256()
    files = (sorted(CSRC.glob("*")) + sorted(EMU.glob("*.cpp")) + sorted(EMU.glob("*.h"))
             + sorted(EMU.glob("include/*.h")))
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
    """Backend -> (error or None, rows); a signature pass's buckets go to SIGS[backend] (tensor -> K floats)."""
    out: dict[str, tuple[str | None, list[tuple]]] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("backend "):
            _, name, status = line.split(" ", 2)
            out[name] = (None if status == "ok" else status[len("error "):], [])
        elif line.startswith("sig "):
            v = line.split()
            out.setdefault("sig:" + name, (None, []))[1].append(tuple(float(x) for x in v[2:]))
        else:
            v = line.split()
            out[name][1].append((int(v[0]), int(v[1]), int(v[2]), int(v[3]), float(v[4]), float(v[5])))
    return out


def run_driver(exe: Path, case: Case | None, tmp_path: Path, schedules=("inorder",), workers=1, env=None,
               extra=(), timeout: float | None = None):
    cases = tmp_path / "cases.bin"
    out = tmp_path / "out.txt"
    args = [str(exe), "--out", str(out), "--schedules", ",".join(schedules), "--workers", str(workers), *extra]
    if case is not None:
        case.write(cases)
        args += ["--cases", str(cases)]
    full_env = {**os.environ, "CUDAEMU_SMS": "4", **(env or {})}
    if timeout is None:
        timeout = float(os.environ.get("BENCHSUITE_CUDAEMU_TIMEOUT", "300"))
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
        if backend.startswith("sig:"):
            continue
        assert err is None, f"{backend}: {err}"
        assert len(rows) == len(case.tensors)
        for i, (row, o) in enumerate(zip(rows, oracle)):
            ref = cpu[i]
            if backend.startswith("cuda-sig"):  # the signature pass: non-finite counts and sum of squares only
                assert row[3] == 0 and row[5] == 0.0, (backend, i, row)  # zeros and max are not computed
                o, ref = (*o[:3], 0, o[4], 0.0), (*ref[:3], 0, ref[4], 0.0)
            if row[:4] != tuple(o[:4]) or row[5] != o[5] or not close(row[4], o[4], rel):
                problems.append(f"{backend} vs oracle, #{i} {case.labels[i]}: got {row}, want {tuple(o)}")
            if row[:4] != ref[:4] or row[5] != ref[5] or not close(row[4], ref[4], rel):
                problems.append(f"{backend} vs cpu, #{i} {case.labels[i]}: got {row}, cpu {ref}")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:12])


# ------------------------------------------------------------------------------------------------
# Planted values: the package's generator (benchsuite selftest and the first-use self-check use it too).

def planted_suite(seed: int = 1, offsets=(0, 1, 2, 3)) -> Case:
    suite = full_suite(seed, offsets)
    case = Case()
    for t, off, label in zip(suite.tensors, suite.offsets, suite.labels):
        case.add(t, off, label)
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


def test_idle_accumulator_zeroed_by_few_blocks(tmp_path):
    """One block per launch and 1,800 words to zero: the zeroing loop must stride over all of them (the
    driver fails the launch when a word of the idle accumulator is left non-zero)."""
    case = many_small(300, seed=11)
    r, res = run_driver(build("driver"), case, tmp_path, schedules=["inorder", "random:4"], workers=1,
                        env={"CUDAEMU_SMS": "1", "CUDAEMU_OCCUPANCY": "1"})
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


SIG_TENSORS = [(torch.float32, 200_003, 0), (torch.bfloat16, 140_000, 0), (torch.float16, 70_001, 0),
               (torch.float32, 70_000, 1), (torch.bfloat16, 65_536 + 9, 3), (torch.float64, 66_000, 0)]
SIG_TENSORS_SMALL = [(torch.float32, 65_536 + 5, 0), (torch.bfloat16, 2 * 65_536 + 3, 0), (torch.float16, 3_000, 1),
                     (torch.float64, 2_000, 0)]


def sig_case(seed: int = 5, tensors=SIG_TENSORS, planted_too: bool = True) -> Case:
    """The planted suite plus tensors over several chunks: aligned ones (the vector loop), 1-3 elements off
    (the scalar path), fp64, a partial last chunk, and NaN/Inf inside a vector."""
    case = planted_suite(seed, offsets=(0, 1, 3)) if planted_too else Case()
    g = torch.Generator().manual_seed(seed)
    for dtype, n, off in tensors:
        t = torch.randn(n, generator=g).to(dtype)
        t[n // 3] = float("nan")
        t[n // 2] = float("-inf")
        case.add(t, off, f"multi-chunk {dtype} n={n} off={off}")
    return case


def check_signatures(case: Case, results, rel=2e-5):
    """Each signature pass's buckets against benchsuite.gradscan.signature (float64, by the definition)."""
    from benchsuite.gradscan import signature as sig
    refs = [sig.signature(t) for t in case.tensors]
    passes = [b for b in results if b.startswith("sig:")]
    assert passes, "no signature pass ran"
    problems = []
    for backend in passes:
        rows = results[backend][1]
        assert len(rows) == len(case.tensors)
        for i, (got, ref, t) in enumerate(zip(rows, refs, case.tensors)):
            big = t.numel() and float(t.double().nan_to_num(0, 0, 0).abs().max()) > 1e30
            if big:  # the kernel sums the sketch in float32: values near its range may saturate
                continue
            scale = math.sqrt(ref.sumsq / sig.K) if ref.sumsq else 0.0
            for b, (x, y) in enumerate(zip(got, ref.proj)):
                if abs(x - y) > rel * max(abs(y), scale) + 1e-300:
                    problems.append(f"{backend} #{i} {case.labels[i]} bucket {b}: kernel {x!r}, reference {y!r}")
                    break
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:12])


def test_signature_pass_matches_the_definition(tmp_path):
    """benchsuite_gradscan_sig: the non-finite counts and sum of squares as the plain kernel's (every schedule
    against the oracle and the CPU core; it computes no zeros or max) and each tensor's count sketch as
    benchsuite.gradscan.signature computes it."""
    case = sig_case()
    r, res = run_driver(build("driver"), case, tmp_path, schedules=["inorder", "reverse", "random:6"], workers=2,
                        extra=["--sig"])
    assert r.returncode == 0, r.stderr[-4000:]
    check(case, res)
    check_signatures(case, res)


def test_signature_pass_sanitizers(tmp_path):
    """ASan+UBSan (reads past a tensor, the partial chunk's tail) and TSan (the shared buckets' barriers)."""
    case = sig_case(seed=8, tensors=SIG_TENSORS_SMALL, planted_too=False)
    for variant in ("asan", "tsan"):
        r, res = run_driver(build("driver", variant), case, tmp_path, schedules=["random:12"], workers=2,
                            extra=["--sig", "--skip-cpu"], env={"TSAN_OPTIONS": "halt_on_error=1"})
        assert r.returncode == 0, f"{variant}: {r.stderr[-4000:]}"
        check_signatures(case, res)


def test_kernel_never_reports_an_unknown_dtype_clean(tmp_path):
    """Past the host check, the kernel itself flags a row with an unknown dtype code as non-finite."""
    case = Case()
    case.add(torch.ones(1000))
    case.add(torch.zeros(3000), code=9)
    case.add(torch.full((10,), 2.0, dtype=torch.float64))
    r, res = run_driver(build("driver"), case, tmp_path, schedules=["inorder", "random:2"],
                        extra=["--raw-kernel", "--skip-cpu"])
    assert r.returncode == 0, r.stderr[-4000:]
    for backend, (err, rows) in res.items():
        assert err is None
        assert rows[0] == (0, 0, 0, 0, 1000.0, 1.0) and rows[2] == (0, 0, 0, 0, 40.0, 2.0), (backend, rows)
        assert rows[1][0] > 0, (backend, rows[1])  # reported as NaN: never "clean"


@pytest.mark.parametrize("driver_version, route", [(12040, "nvrtc"), (13000, "fatbin")])
def test_host_path_through_an_emulated_driver(tmp_path, driver_version, route):
    """The extension's own CUDA host code (csrc/cuda_driver.cpp and benchsuite/gradscan/_cuda.py) against a
    libcuda.so.1 that runs the kernel under cudaemu: the route is chosen by the driver's CUDA version (a
    CUDA 12.4 driver cannot take the nvcc 13 fatbin, so NVRTC compiles a cubin), the image loads, the
    launch's arguments reach the kernel as its signature says, results match, the idle accumulator is
    zeroed, and every context pushed is popped."""
    from benchsuite.gradscan import _cuda
    if route == "fatbin" and _cuda.fatbin_path() is None:
        pytest.skip("this build has no fatbin (no nvcc at build time)")
    if route == "nvrtc" and _cuda.nvrtc()[0] is None:
        pytest.skip("no NVRTC (pip install nvidia-cuda-nvrtc-cu12)")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libcuda.so.1").symlink_to(build("libcuda", "shared"))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}",
           "FAKE_CUDA_DRIVER_VERSION": str(driver_version), "FAKE_CUDA_CC": "80", "CUDAEMU_SMS": "4",
           "BENCHSUITE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(EMU / "host_path.py")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["facts"]["driver_version"] == driver_version and res["facts"]["devices"][0]["capability"] == [8, 0]
    assert res["ready"], res["error"]
    assert res["route"]["kind"] == route, res["route"]
    if route == "nvrtc":
        assert res["route"]["target"] == "sm_80" and res["route"]["driver_floor"] == "525.60.13"
        assert "fatbin" not in str(res["route"].get("skipped", "fatbin")) or _cuda.fatbin_path() is not None
        assert list((tmp_path / "cache" / "kernels").glob("gradscan-sm_80-*.cubin"))  # cached for next time
    assert res["mismatches_0"] == [] and res["mismatches_1"] == [], (res["mismatches_0"][:3], res["mismatches_1"][:3])
    assert res["idle_zeroed_0"] and res["idle_zeroed_1"] and res["bad_total_refused"]
    loaded = "cubin" if route == "nvrtc" else "fatbin"
    assert res["driver_report"] == (f"loaded={loaded} function=benchsuite_gradscan launches=3 sig_launches=1 "
                                    "bad_context_launches=0 depth=0")
    # The signature pass, launched by the same host code: each probe tensor's buckets as signature.py's.
    assert len(res["sig_worst"]) == 6 and max(res["sig_worst"]) < 1e-5, res["sig_worst"]


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


def _static_figures(compiler: str) -> dict:
    import sys
    sys.path.insert(0, str(EMU))
    import gpu_static
    missing = gpu_static.missing_tools()
    if compiler == "nvrtc":
        from benchsuite.gradscan import _cuda
        missing = [t for t in missing if t != "nvcc"]
        if _cuda.nvrtc()[0] is None:
            missing.append("NVRTC (pip install nvidia-cuda-nvrtc-cu12)")
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    key = _source_hash(["gpu_static", compiler, (EMU / "gpu_static.py").read_text()])
    cached = CACHE / f"static-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    res = gpu_static.measure(compiler)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(res))
    return res


@pytest.mark.parametrize("compiler", ["nvcc", "nvrtc"])
def test_static_gpu_figures(compiler):
    """The kernel as nvcc builds the shipped fatbin and as NVRTC builds it on a user's machine."""
    res = _static_figures(compiler)
    for arch in ("sm_80", "sm_90"):
        r = res["archs"][arch]
        for fn, p in r["ptxas"].items():
            if fn.startswith("probe_") and not fn.startswith("probe_sig_"):  # the vector loops alone: no spills
                assert p.get("spill_stores", 0) == 0 and p.get("spill_loads", 0) == 0, (arch, fn, p)
        # The whole kernel may spill a few words around its per-tensor loop, never in a vector loop.
        k = r["ptxas"]["scan_kernel"]
        assert k.get("spill_stores", 0) <= 32 and k.get("spill_loads", 0) <= 32, (arch, k)
        assert r["kernel"]["vector_loops"] >= 8 and r["kernel"]["spills_in_vector_loops"] == 0, (arch, r["kernel"])
        for name, loop in r["loops"].items():
            assert loop, (arch, name, "no vector loop found")
            assert loop["per_element"] <= LOOP_CEILING[name], (arch, name, loop)
            assert loop["fast_path_per_element"] <= FAST_CEILING[name], (arch, name, loop)
        # The signature pass: nothing spilled in its vector loops, and per element (fast path plus the
        # per-chunk upper bound over a chunk's 256 elements per thread) within 10% of the plain scan's fast
        # path: the budget (docs/results/cuda-static.md).
        assert r["sig_kernel"]["spills_in_vector_loops"] == 0, (arch, r["sig_kernel"])
        for name, loop in r["sig_loops"].items():
            assert loop, (arch, name, "no vector loop found in the signature probe")
            total = loop["fast_path_per_element"] + loop["per_chunk"] / 256
            assert total <= 1.1 * r["loops"][name]["fast_path_per_element"], (arch, name, loop)
    assert res["archs"]["sm_90"]["loops"]["bfloat16"]["per_element"] <= 12  # the target
