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

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

from . import _native, _probes
from ._native import _core, warn_once
from ._nvrtc import (  # noqa: F401 (the route's pieces, re-exported: load_kernel looks them up here)
    DRIVER_FLOOR,
    Nvrtc,
    compile_kernel,
    cuda_version_text,
    driver,
    driver_floor,
    fatbin_path,
    fatbin_route,
    kernel_cache_dir,
    kernel_options,
    nvidia_driver_release,
    nvrtc,
    nvrtc_candidates,
    pick_target,
)

_lock = threading.RLock()

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
    assert facts is not None  # driver() gives the facts or the error
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
        assert nerr is not None  # nvrtc() gives an NVRTC or the error
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
    import torch
    with _lock:
        st = _devices.get(index)
        if st is None:
            st = _devices[index] = load_kernel(index)
            if st.ready and check:
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
        self.dev_table: torch.Tensor | None = None
        self.acc: torch.Tensor | None = None
        self.n = -1
        self.parity = 0


_plans: dict[tuple[int, int], _Plan] = {}


def launch(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Enqueue one scan of ``tensors`` (dense, non-empty, on ``device``) on the current stream. Returns the
    device slice of n*6 words (counts, then stats) that holds the results once the stream reaches it; the
    caller enqueues its copy back before the next scan on this stream (which zeroes that slice)."""
    import torch
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = int(torch.cuda.current_stream(index).cuda_stream)
    key = (index, handle)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _Plan()
    n = len(tensors)
    if plan.tables.update(tensors):
        assert plan.tables.table is not None  # update() built it
        # A fresh pinned block per upload: torch's host allocator keeps it until the copy is done.
        plan.dev_table = plan.tables.table.pin_memory().to(device, non_blocking=True)
        if n != plan.n:
            plan.acc = torch.zeros((2, n * 6), dtype=torch.int64, device=device)
            plan.n, plan.parity = n, 0
    # The first launch on a plan uploads the table and allocates the accumulators (plan.n starts at -1).
    assert plan.acc is not None and plan.dev_table is not None
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
    import torch
    return words[: n * 4].view(n, 4), words[n * 4:].view(torch.float64).view(n, 2)


# ----------------------------------------------------------------------------------------------------
# The first-use self-check: the kernel on planted probes against the NumPy reference.

def cuda_rows(views: list[torch.Tensor], device: torch.device) -> list[tuple]:
    """Run the kernel itself over ``views`` (all on ``device``) and read the results back."""
    import torch
    dense = [v for v in views if v.numel()]
    words = launch(dense, device).cpu() if dense else torch.zeros(0, dtype=torch.int64)
    return _probes.rows(views, *split(words, len(dense)))


def self_check(device: torch.device) -> dict:
    """The kernel on ``device`` against the reference, over ``probe_suite``: {"ok", "reason", "seconds"}."""
    t0 = time.perf_counter()
    suite = _probes.probe_suite()
    try:
        views = suite.placed(device)
        got = cuda_rows(views, device)
        bad = _probes.mismatches(suite.labels, got, [_probes.reference(t) for t in suite.tensors])
    except Exception as exc:  # a failed launch or copy: the kernel is not used
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0}
    return {"ok": not bad, "reason": (f"{len(bad)} of {len(views)} probe tensors differ from the reference, "
                                      f"first: {bad[0]}") if bad else None,
            "tensors": len(views), "seconds": round(time.perf_counter() - t0, 3)}
