"""`benchsuite info`: versions, the extension's build facts and the device, like `python -m xformers.info`."""
from __future__ import annotations

import importlib
import platform
import sys

from .harness.versions import installed as package_version


def device_summary() -> dict:
    import torch
    d = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda, "devices": []}
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
    facts = {"importable": True, **core.build_info()}
    if core.HAS_CUDA:
        try:
            facts["cuda_devices_seen"] = core.cuda_device_count()
        except RuntimeError as exc:
            facts["cuda_devices_seen"] = 0
            # With no NVIDIA driver at all the runtime says "driver version is insufficient".
            facts["cuda_runtime_note"] = ("no usable NVIDIA driver on this machine, so the CUDA kernel cannot run here; "
                                          f"the runtime said: {str(exc).replace('benchsuite._core: ', '')}")
    return facts


def collect() -> dict:
    return {
        "benchsuite": package_version("benchsuite"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in
                     ("torch", "transformers", "peft", "trl", "accelerate", "nvidia-ml-py", "uv")},
        "extension": build_facts(),
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
        if ext["cuda"]:
            lines.append(f"  CUDA           compiled (nvcc {ext['cuda_version']}, architectures {ext['cuda_architectures']})")
            lines.append(f"  CUDA devices   {ext.get('cuda_devices_seen')}"
                         + (f"  ({ext['cuda_runtime_note']})" if ext.get("cuda_runtime_note") else ""))
        else:
            lines.append("  CUDA           not compiled (no nvcc at build time, or BENCHSUITE_CUDA=OFF)")
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
