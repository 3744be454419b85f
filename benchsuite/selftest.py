"""`benchsuite selftest`: the scanner on planted values (gradscan/_probes.py), on every backend present (the CPU
core, the CUDA kernel per GPU, torch), each against the NumPy float64 reference."""
from __future__ import annotations

import platform
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    pass

from . import info as info_mod
from .gradscan import _cuda, _native
from .gradscan._oracle import tensor_stats
from .gradscan._probes import Suite, full_suite, mismatches, probe_suite, reference
from .gradscan._probes import rows as probe_rows


def _backend_rows(name: str, suite: Suite) -> tuple[list[tuple] | None, str | None]:
    import torch
    if name == "cpu-core":
        if not _native.available():
            return None, f"benchsuite._core is not available ({_native.IMPORT_ERROR})"
        views = suite.placed("cpu")
        dense = [v for v in views if v.numel()]
        counts, stats = _native.scan_cpu(dense)
        return probe_rows(views, counts, stats), None
    if name == "torch-cpu":
        return [tensor_stats(v) for v in suite.placed("cpu")], None
    kind, _, index = name.partition(":")
    device = torch.device("cuda", int(index))
    if kind == "torch-cuda":
        return [tensor_stats(v) for v in suite.placed(device)], None
    st = _cuda.device_state(int(index), check=False)
    if not st.ready:
        return None, st.error
    return _cuda.cuda_rows(suite.placed(device), device), None


def run_selftest(quick: bool = False) -> dict:
    """The planted suite on every backend present, each against the NumPy reference."""
    import torch
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
