"""How the CUDA kernel reaches a user's GPU, and the host side of a CUDA scan.

The route. A GPU machine that got torch from PyPI has no CUDA toolkit, but torch's CUDA wheels install
NVRTC (the ``nvidia-cuda-nvrtc-cu12`` wheel, or ``nvidia-cuda-nvrtc`` for CUDA 13), and the driver's own
library (libcuda) is there wherever a GPU is usable. So the kernel's source is embedded in
``benchsuite._core``; the first CUDA scan in a process compiles it with that NVRTC into SASS for the
device's own architecture (a cubin), caches the cubin on disk, and loads it through the driver API.
Nothing at install time needs a toolkit, any architecture NVRTC knows is served, and the only driver
requirement is CUDA's minor-version compatibility for the NVRTC's major version (SASS needs no PTX JIT
by the driver): see ``DRIVER_FLOOR``. When nvcc was present at build time, a fatbin built then is
shipped beside the extension and used first, when the driver is new enough for that nvcc.

The first CUDA scan on each device also runs the kernel on a small planted probe and compares it with
torch; a failure or a mismatch warns once and the process uses torch's scanner on that device.
"""
from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _native
from ._native import _core, warn_once

# CUDA's minor-version compatibility: code built by a toolkit of major version M, as SASS, runs on any
# driver of at least these versions (Linux / Windows; NVIDIA's "CUDA Compatibility" guide, table "CUDA
# Toolkit 11.x, 12.x and 13.x driver version ranges", and the CUDA 11.0 note on 450.80.02 / 452.39; for 13.x
# the table says ">= 580": 580.65.06 is the CUDA 13.0 GA Linux driver, and for Windows only the branch is given).
DRIVER_FLOOR = {11: ("450.80.02", "452.39"), 12: ("525.60.13", "527.41"), 13: ("580.65.06", "580")}

_lock = threading.RLock()


def driver_floor(cuda_major: int) -> str:
    pair = DRIVER_FLOOR.get(cuda_major)
    if pair is None:
        return f"a driver supporting CUDA {cuda_major}.0"
    return pair[1] if sys.platform == "win32" else pair[0]


def cuda_version_text(v: int) -> str:
    """cuDriverGetVersion's integer (e.g. 12040) as text ("12.4")."""
    return f"{v // 1000}.{(v % 1000) // 10}"


# ----------------------------------------------------------------------------------------------------
# The driver.

_driver: dict | None = None
_driver_error: str | None = None


def driver() -> tuple[dict | None, str | None]:
    """The driver's facts ({"driver_version", "devices"}) or why it cannot be used; read once."""
    global _driver, _driver_error
    with _lock:
        if _driver is None and _driver_error is None:
            if _core is None:
                _driver_error = f"benchsuite._core is not available ({_native.IMPORT_ERROR})"
            else:
                try:
                    _driver = _core.cuda_driver()
                except RuntimeError as exc:
                    _driver_error = str(exc).replace("benchsuite._core: ", "")
        return _driver, _driver_error


def nvidia_driver_release() -> str | None:
    """The driver's release as NVML reports it (e.g. "535.104.05"), or None."""
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------------
# NVRTC.

def _torch_cuda_major() -> int | None:
    v = torch.version.cuda
    return int(v.split(".")[0]) if v else None


def nvrtc_candidates() -> list[str]:
    """Where NVRTC may be, best first: $BENCHSUITE_NVRTC; one already loaded in this process; torch's
    CUDA wheels (the major version torch was built with first); $CUDA_HOME; the loader's search path."""
    out: list[str] = []
    if os.environ.get("BENCHSUITE_NVRTC"):
        out.append(os.environ["BENCHSUITE_NVRTC"])
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(" ")[-1]
                if "libnvrtc.so" in os.path.basename(path) and "builtins" not in path:
                    out.append(path)
    except OSError:
        pass
    wheel_dirs = []
    try:
        import nvidia  # the namespace package of NVIDIA's wheels
        wheel_dirs = list(nvidia.__path__)
    except ImportError:
        pass
    found = []
    for base in wheel_dirs:
        for pattern in ("cu*/lib/libnvrtc.so.*", "cuda_nvrtc/lib/libnvrtc.so.*", "cu*/bin/nvrtc64_*.dll",
                        "cuda_nvrtc/bin/nvrtc64_*.dll"):
            found += [p for p in glob.glob(os.path.join(base, pattern))
                      if "builtins" not in p and ".alt." not in p]
    major = _torch_cuda_major()

    def order(p: str):
        name = os.path.basename(p)
        m = name.split(".so.")[-1].split(".")[0] if ".so." in name else name[len("nvrtc64_"):][:2]
        return (0 if major is not None and m == str(major) else 1, -int(m) if m.isdigit() else 0, p)

    out += sorted(found, key=order)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            out += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")), reverse=True)
    out += ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"]
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


class Nvrtc:
    """The few NVRTC calls the compile needs, through ctypes (NVRTC is a plain C library)."""

    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        self.path = path
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._ok(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        self.archs: list[int] = []
        if hasattr(self.lib, "nvrtcGetSupportedArchs"):
            n = ctypes.c_int()
            if self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)) == 0 and n.value > 0:
                arr = (ctypes.c_int * n.value)()
                if self.lib.nvrtcGetSupportedArchs(arr) == 0:
                    self.archs = sorted(arr)
        self.cubin = hasattr(self.lib, "nvrtcGetCUBIN")  # CUDA 11.1 and later

    def _ok(self, code: int, what: str) -> None:
        if code != 0:
            self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            text = self.lib.nvrtcGetErrorString(code)
            raise RuntimeError(f"{what}: {text.decode() if text else code}")

    def compile(self, source: str, headers: dict[str, str], options: list[str]) -> tuple[bytes, str]:
        """(image, log): the cubin when an sm_XX architecture is asked for, else PTX (null-terminated)."""
        prog = ctypes.c_void_p()
        names = list(headers)
        h_src = (ctypes.c_char_p * len(names))(*[headers[n].encode() for n in names])
        h_names = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
        self._ok(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"gradscan_kernel.cu",
                                             len(names), h_src, h_names), "nvrtcCreateProgram")
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            rc = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            self.lib.nvrtcGetProgramLog(prog, buf)
            log = buf.value.decode(errors="replace").strip()
            if rc != 0:
                raise RuntimeError(f"NVRTC could not compile the kernel: {log[-2000:] or rc}")
            want_cubin = any(o.startswith("--gpu-architecture=sm_") for o in options)
            get_size, get = ((self.lib.nvrtcGetCUBINSize, self.lib.nvrtcGetCUBIN) if want_cubin else
                             (self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX))
            self._ok(get_size(prog, ctypes.byref(size)), "nvrtcGet*Size")
            image = ctypes.create_string_buffer(size.value)
            self._ok(get(prog, image), "nvrtcGet*")
            return image.raw, log
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


_nvrtc: Nvrtc | None = None
_nvrtc_error: str | None = None


def nvrtc() -> tuple[Nvrtc | None, str | None]:
    """The first NVRTC of ``nvrtc_candidates()`` that loads, or why none did."""
    global _nvrtc, _nvrtc_error
    with _lock:
        if _nvrtc is None and _nvrtc_error is None:
            tried = []
            for path in nvrtc_candidates():
                try:
                    _nvrtc = Nvrtc(path)
                    break
                except (OSError, RuntimeError, AttributeError) as exc:
                    if os.path.isabs(path):
                        tried.append(f"{path}: {exc}")
            if _nvrtc is None:
                _nvrtc_error = ("NVRTC was not found (torch's CUDA wheels install it as nvidia-cuda-nvrtc-cu12 or "
                                "nvidia-cuda-nvrtc; `pip install nvidia-cuda-nvrtc-cu12`, or set BENCHSUITE_NVRTC "
                                "to a libnvrtc)" + (f"; tried {'; '.join(tried[:3])}" if tried else ""))
        return _nvrtc, _nvrtc_error


def kernel_options(target: str) -> list[str]:
    """NVRTC options for ``target`` ("sm_80" for a cubin, "compute_80" for PTX)."""
    return [f"--gpu-architecture={target}", "-std=c++17"]


def pick_target(nv: Nvrtc, capability: tuple[int, int]) -> tuple[str, str | None]:
    """(target, reason when no SASS): the device's own sm_XX when NVRTC knows it, else PTX of the newest
    architecture it knows below the device's (the driver then JIT-compiles it)."""
    cc = capability[0] * 10 + capability[1]
    archs = nv.archs or [cc]
    if cc in archs and nv.cubin:
        return f"sm_{cc}", None
    older = [a for a in archs if a <= cc]
    if not older:
        raise RuntimeError(f"NVRTC {nv.version[0]}.{nv.version[1]} cannot compile for sm_{cc} (it knows "
                           f"sm_{archs[0]} to sm_{archs[-1]})")
    return f"compute_{older[-1]}", (f"NVRTC {nv.version[0]}.{nv.version[1]} has no SASS for sm_{cc}: PTX for "
                                    f"compute_{older[-1]}, compiled by the driver")


def kernel_cache_dir() -> Path:
    from ..harness.envs import cache_root
    return cache_root() / "kernels"


def compile_kernel(nv: Nvrtc, target: str) -> tuple[bytes, dict]:
    """The kernel compiled by ``nv`` for ``target``, from the on-disk cache when it is there."""
    source, abi = _core.KERNEL_SOURCE, _core.KERNEL_ABI_HEADER
    options = kernel_options(target)
    key = hashlib.sha256("\0".join([source, abi, *options, f"{nv.version}", nv.path]).encode()).hexdigest()[:20]
    suffix = "cubin" if target.startswith("sm_") else "ptx"
    path = kernel_cache_dir() / f"gradscan-{target}-nvrtc{nv.version[0]}.{nv.version[1]}-{key}.{suffix}"
    facts = {"target": target, "nvrtc": f"{nv.version[0]}.{nv.version[1]}", "nvrtc_path": nv.path,
             "cache_file": str(path)}
    try:
        image = path.read_bytes()
        if image:
            facts["cached"] = True
            return image, facts
    except OSError:
        pass
    t0 = time.perf_counter()
    image, log = nv.compile(source, {"gradscan_abi.h": abi}, options)
    facts.update(cached=False, compile_seconds=round(time.perf_counter() - t0, 3))
    if log:
        facts["log"] = log[-2000:]
    try:  # written whole or not at all; a read-only cache only costs the compile next time
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(image)
        os.replace(tmp, path)
    except OSError as exc:
        facts["cache_error"] = str(exc)
    return image, facts


def fatbin_path() -> Path | None:
    if _core is None:
        return None
    p = Path(_core.__file__).with_name("gradscan_kernel.fatbin")
    return p if p.is_file() else None


def fatbin_route() -> dict | None:
    """The shipped fatbin as a route: its path, the nvcc that built it, its architectures and the driver it
    needs (``cuda_major``: that nvcc's CUDA major version); None when this build has none."""
    fat = fatbin_path()
    nvcc = _core.build_info().get("fatbin_nvcc") if fat is not None else None
    if not nvcc:
        return None
    major = int(str(nvcc).split(".")[0])
    return {"kind": "fatbin", "path": str(fat), "nvcc": nvcc,
            "architectures": _core.build_info().get("fatbin_architectures"), "cuda_major": major,
            "driver_floor": driver_floor(major)}


# ----------------------------------------------------------------------------------------------------
# Per device: the route taken and the self-check.

@dataclass
class DeviceState:
    index: int
    ready: bool = False
    error: str | None = None  # why the kernel is not used on this device
    route: dict = field(default_factory=dict)
    selfcheck: dict = field(default_factory=dict)


_devices: dict[int, DeviceState] = {}


def load_kernel(index: int) -> DeviceState:
    """Load the kernel for device ``index`` (fatbin or NVRTC); no self-check."""
    st = DeviceState(index)
    facts, err = driver()
    if err is not None:
        st.error = err
        return st
    if index >= len(facts["devices"]):
        st.error = f"the driver reports {len(facts['devices'])} device(s), not cuda:{index}"
        return st
    dev = facts["devices"][index]
    cap = tuple(dev["capability"])
    drv = facts["driver_version"]
    st.route = {"device": dev["name"], "capability": f"{cap[0]}.{cap[1]}",
                "driver_cuda": cuda_version_text(drv)}
    attempts = []
    fat = fatbin_route()
    if fat is not None:
        if drv >= fat["cuda_major"] * 1000:
            try:
                _core.cuda_load(index, Path(fat["path"]).read_bytes())
                st.route.update(kind="fatbin", image=fat["path"], nvcc=fat["nvcc"], architectures=fat["architectures"],
                                driver_floor=fat["driver_floor"])
                st.ready = True
                return st
            except RuntimeError as exc:
                attempts.append(f"the shipped fatbin: {str(exc).replace('benchsuite._core: ', '')}")
        else:
            attempts.append(f"the shipped fatbin needs a driver for CUDA {fat['cuda_major']}.0 (at least "
                            f"{fat['driver_floor']}), this one supports CUDA {cuda_version_text(drv)}")
    nv, nerr = nvrtc()
    if nv is None:
        st.error = "; ".join(attempts + [nerr])
        return st
    try:
        target, note = pick_target(nv, cap)
        if not target.startswith("sm_") and drv < nv.version[0] * 1000 + nv.version[1] * 10:
            raise RuntimeError(f"{note}, which needs a driver for CUDA {nv.version[0]}.{nv.version[1]}; this one "
                               f"supports CUDA {cuda_version_text(drv)}")
        image, cfacts = compile_kernel(nv, target)
        _core.cuda_load(index, image)
    except RuntimeError as exc:
        st.error = "; ".join(attempts + [str(exc).replace("benchsuite._core: ", "")])
        return st
    st.route.update(kind="nvrtc", **cfacts,
                    driver_floor=driver_floor(nv.version[0]) if target.startswith("sm_") else
                    f"a driver for CUDA {nv.version[0]}.{nv.version[1]} (PTX)")
    if note:
        st.route["note"] = note
    if attempts:
        st.route["skipped"] = attempts
    st.ready = True
    return st


def device_state(index: int, check: bool = True) -> DeviceState:
    """The kernel's state on device ``index``: loaded and self-checked at the first call of a process."""
    with _lock:
        st = _devices.get(index)
        if st is None:
            st = _devices[index] = load_kernel(index)
            if st.ready and check:
                from .planted import self_check
                st.selfcheck = self_check(torch.device("cuda", index))
                if not st.selfcheck["ok"]:
                    st.ready = False
                    st.error = f"its self-check on cuda:{index} failed: {st.selfcheck['reason']}"
            if not st.ready:
                warn_once(f"cuda{index}", f"benchsuite: the CUDA scan kernel is not used on cuda:{index} ({st.error}); "
                                          "using torch's scanner there (same results, slower)")
        return st


# ----------------------------------------------------------------------------------------------------
# The host side of a scan: a table uploaded only when the tensors' addresses changed, two accumulators
# used in turn (the kernel zeroes the idle one: no memset), one copy back.

class _Plan:
    __slots__ = ("tables", "dev_table", "acc", "n", "parity")

    def __init__(self):
        self.tables = _native.TableCache()
        self.dev_table = self.acc = None
        self.n = -1
        self.parity = 0


_plans: dict[tuple[int, int], _Plan] = {}


def launch(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Enqueue one scan of ``tensors`` (dense, non-empty, on ``device``) on the current stream. Returns the
    device slice of n*6 words (counts, then stats) that holds the results once the stream reaches it; the
    caller enqueues its copy back before the next scan on this stream (which zeroes that slice)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = int(torch.cuda.current_stream(index).cuda_stream)
    key = (index, handle)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _Plan()
    n = len(tensors)
    if plan.tables.update(tensors):
        # A fresh pinned block per upload: torch's host allocator keeps it until the copy is done.
        plan.dev_table = plan.tables.table.pin_memory().to(device, non_blocking=True)
        if n != plan.n:
            plan.acc = torch.zeros((2, n * 6), dtype=torch.int64, device=device)
            plan.n, plan.parity = n, 0
    cur, nxt = plan.acc[plan.parity], plan.acc[1 - plan.parity]
    try:
        _core.cuda_scan(index, handle, plan.dev_table.data_ptr(), n, plan.tables.total, cur.data_ptr(),
                        nxt.data_ptr(), n * 6)
    except RuntimeError:
        _plans.pop(key, None)  # the accumulators' state is unknown after a failed launch
        raise
    plan.parity ^= 1
    return cur


def split(words: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int64 [n,4], stats float64 [n,2]) views of a host copy of n*6 result words."""
    return words[: n * 4].view(n, 4), words[n * 4:].view(torch.float64).view(n, 2)


# ----------------------------------------------------------------------------------------------------
# The signature pass: one launch of benchsuite_gradscan_sig over a list of tensors (once per gradient
# comparison, not per step, so no plan is kept), and its first-use check against signature.py.

def launch_signatures(tensors: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan ``tensors`` (dense, non-empty, on ``device``) with the signature pass and wait for it: (host n*6
    result words, host float64 [n, SIG_K] signature buckets)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = int(torch.cuda.current_stream(index).cuda_stream)
    tables = _native.TableCache()
    tables.update(tensors)
    n = len(tensors)
    dev_table = tables.table.to(device)
    acc = torch.zeros(n * 6, dtype=torch.int64, device=device)
    sig = torch.zeros((n, _core.SIG_K), dtype=torch.float64, device=device)
    _core.cuda_scan(index, handle, dev_table.data_ptr(), n, tables.total, acc.data_ptr(), 0, 0, sig.data_ptr())
    return acc.cpu(), sig.cpu()


def _sig_probe(device: torch.device) -> list[torch.Tensor]:
    """Every path of the signature pass: the vector loop (aligned fp32/bf16/fp16 over a chunk boundary, a
    partial last chunk, NaN and Inf in a vector), the scalar path (an offset view, fp64), tiny tensors."""
    g = torch.Generator().manual_seed(19)
    base = [torch.randn(70_001, generator=g), torch.randn(66_000, generator=g).bfloat16(),
            torch.randn(3_001, generator=g).half(), torch.randn(1_500, generator=g).double(), torch.randn(7, generator=g)]
    base[0][5] = float("nan")
    base[1][9] = float("inf")
    out = [t.to(device) for t in base]
    out.append(out[0][3:])  # 12 bytes off 16-byte alignment
    return out


def sig_probe_errors(probe: list[torch.Tensor], buckets: torch.Tensor) -> list[float]:
    """Per probe tensor: the largest difference between the kernel's buckets (host [n, SIG_K]) and
    benchsuite.gradscan.signature's, over the typical bucket size sqrt(sum of squares / K)."""
    from . import signature as _sig
    out = []
    for i, t in enumerate(probe):
        ref = _sig.signature(t)
        scale = max((ref.sumsq / _sig.K) ** 0.5, 1e-30)
        out.append(float((buckets[i] - torch.tensor(ref.proj, dtype=torch.float64)).abs().max()) / scale)
    return out


_sig_checked: dict[int, str | None] = {}


def signature_kernel_error(index: int) -> str | None:
    """None when the signature pass can be used on device ``index`` (loaded, self-checked, and its first
    result agrees with benchsuite.gradscan.signature on a probe); else why not (warned once)."""
    with _lock:
        if index in _sig_checked:
            return _sig_checked[index]
    st = device_state(index)
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
        warn_once(f"cuda-sig{index}", f"benchsuite: the CUDA signature pass is not used on cuda:{index} ({err}); "
                                      "computing signatures with torch there (same numbers, slower)")
    with _lock:
        _sig_checked[index] = err
    return err
