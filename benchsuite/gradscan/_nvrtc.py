"""The driver, NVRTC and the compiled kernel image: how the CUDA kernel reaches a user's GPU (see _cuda.py)."""
from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..common import cache_root
from . import _native
from ._native import _core

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
    import torch
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
    return list(dict.fromkeys(out))  # each once, in order


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
    return cache_root() / "kernels"


def compile_kernel(nv: Nvrtc, target: str) -> tuple[bytes, dict]:
    """The kernel compiled by ``nv`` for ``target``, from the on-disk cache when it is there."""
    source, abi = _core.KERNEL_SOURCE, _core.KERNEL_ABI_HEADER
    options = kernel_options(target)
    key = hashlib.sha256("\0".join([source, abi, *options, f"{nv.version}", nv.path]).encode()).hexdigest()[:20]
    suffix = "cubin" if target.startswith("sm_") else "ptx"
    path = kernel_cache_dir() / f"gradscan-{target}-nvrtc{nv.version[0]}.{nv.version[1]}-{key}.{suffix}"
    facts: dict[str, Any] = {"target": target, "nvrtc": f"{nv.version[0]}.{nv.version[1]}", "nvrtc_path": nv.path,
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
