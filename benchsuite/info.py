"""`benchsuite info`: versions, the extension's build facts and the device, like `python -m xformers.info`."""
from __future__ import annotations

import importlib
import platform
import sys
from typing import Any

from .gradscan import _cuda
from .harness.versions import installed as package_version


def device_summary() -> dict:
    import torch
    d: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda, "devices": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            d["devices"].append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                                 "memory_bytes": p.total_memory, "multiprocessors": p.multi_processor_count})
    d["cpu"] = platform.processor() or platform.machine()
    d["cpu_threads"] = torch.get_num_threads()
    return d


def build_facts() -> dict:
    try:
        core = importlib.import_module("benchsuite._core")
    except ImportError as exc:
        return {"importable": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"importable": True, **core.build_info()}


def _release_tuple(text: str) -> tuple:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def cuda_facts() -> dict:
    """How the CUDA kernel would reach this machine's GPUs: the routes, the driver each needs, what was
    found, and per visible device the route taken and its self-check (this loads the kernel)."""
    import torch

    out: dict = {"routes": []}
    fat = _cuda.fatbin_route()
    if fat is not None:
        out["routes"].append({k: fat[k] for k in ("kind", "path", "nvcc", "architectures", "driver_floor")})
    nv, nerr = _cuda.nvrtc()
    if nv is not None:
        out["routes"].append({"kind": "nvrtc", "path": nv.path, "version": f"{nv.version[0]}.{nv.version[1]}",
                              "architectures": f"sm_{nv.archs[0]}-sm_{nv.archs[-1]}" if nv.archs else None,
                              "driver_floor": _cuda.driver_floor(nv.version[0])})
    else:
        out["nvrtc_error"] = nerr
    floors = [r["driver_floor"] for r in out["routes"]]
    # The kernel runs where any route does: the lowest floor is what it needs.
    out["driver_floor"] = min(floors, key=_release_tuple) if floors else None
    facts, err = _cuda.driver()
    out["driver_release"] = _cuda.nvidia_driver_release()
    if err is not None:
        out["driver_error"] = err
    else:
        assert facts is not None  # driver() gives the facts or the error
        out["driver_cuda"] = _cuda.cuda_version_text(facts["driver_version"])
        out["driver_devices"] = len(facts["devices"])
    if out["driver_release"] and out["driver_floor"]:
        out["driver_ok"] = _release_tuple(out["driver_release"]) >= _release_tuple(out["driver_floor"])
    out["devices"] = []
    if torch.cuda.is_available() and err is None:
        for i in range(torch.cuda.device_count()):
            st = _cuda.device_state(i)
            out["devices"].append({"index": i, "ready": st.ready, "error": st.error, "route": st.route,
                                   "selfcheck": st.selfcheck})
    return out


def collect() -> dict:
    return {
        "benchsuite": package_version("benchsuite"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in
                     ("torch", "transformers", "peft", "trl", "accelerate", "nvidia-ml-py", "uv")},
        "extension": build_facts(),
        "cuda": cuda_facts(),
        "device": device_summary(),
    }


def render(info: dict) -> str:
    lines = [f"benchsuite {info['benchsuite']}  (python {info['python']}, {info['platform']})", "", "packages:"]
    for name, v in info["packages"].items():
        lines.append(f"  {name:<14} {v or 'not installed'}")
    ext = info["extension"]
    lines += ["", "extension benchsuite._core:"]
    if not ext["importable"]:
        lines.append(f"  NOT AVAILABLE ({ext['error']}); the scanner falls back to pure torch")
    else:
        lines.append(f"  version        {ext['version']} ({ext['compiler']})")
        cuda = info["cuda"]
        lines.append("  CUDA kernel    loaded at the first CUDA scan through the driver API (no CUDA runtime linked), "
                     "by the first route that works:")
        for r in cuda["routes"]:
            if r["kind"] == "fatbin":
                lines.append(f"    fatbin       built by nvcc {r['nvcc']} for sm {r['architectures']} at install: "
                             f"needs driver >= {r['driver_floor']}")
            else:
                lines.append(f"    NVRTC {r['version']:<6} {r['path']} ({r['architectures']}): SASS for the GPU, "
                             f"needs driver >= {r['driver_floor']}")
        if cuda.get("nvrtc_error"):
            lines.append(f"    NVRTC        not found: {cuda['nvrtc_error']}")
        lines.append(f"  driver needed  >= {cuda['driver_floor']}" if cuda["driver_floor"] else
                     "  driver needed  (no route to compile or load the kernel: the CUDA scan would use torch)")
        if cuda.get("driver_error"):
            lines.append(f"  driver found   none usable ({cuda['driver_error']})")
        else:
            ok = cuda.get("driver_ok")
            verdict = "" if ok is None else ("  (enough)" if ok else "  (TOO OLD: CUDA scans use torch)")
            lines.append(f"  driver found   {cuda.get('driver_release') or 'release unknown'} "
                         f"(CUDA {cuda['driver_cuda']}, {cuda['driver_devices']} device(s)){verdict}")
        for d in cuda["devices"]:
            if d["ready"]:
                r = d["route"]
                how = (f"NVRTC {r['nvrtc']} -> {r['target']}" if r.get("kind") == "nvrtc" else
                       f"fatbin (nvcc {r.get('nvcc')})")
                lines.append(f"  cuda:{d['index']}         kernel ready: {how}; self-check passed on "
                             f"{d['selfcheck'].get('tensors')} probe tensors")
            else:
                lines.append(f"  cuda:{d['index']}         kernel NOT used ({d['error']}); scans use torch")
    dev = info["device"]
    lines += ["", "device:"]
    if dev["devices"]:
        for d in dev["devices"]:
            lines.append(f"  cuda:{d['index']}  {d['name']}  sm_{d['capability'].replace('.', '')}  "
                         f"{d['memory_bytes'] / 2**30:.1f} GiB  {d['multiprocessors']} SMs")
    else:
        lines.append(f"  no CUDA device visible to torch (torch CUDA: {dev['torch_cuda']}); CPU {dev['cpu']}, "
                     f"{dev['cpu_threads']} threads")
    return "\n".join(lines)
