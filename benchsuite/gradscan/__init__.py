"""benchsuite.gradscan: per-parameter gradient health in one fused pass.

>>> from benchsuite.gradscan import scan
>>> report = scan(model)            # after loss.backward()
>>> report.problems                 # no-gradient, non-finite, all-zero, with parameter names
>>> [r for r in report if r.nan]    # per-parameter records

How the numbers are computed: each element is classified as NaN, +Inf, -Inf or exact zero (-0.0
included); max |x| and the sum of squares cover finite values only.
- CPU (benchsuite._core): every finite value is squared and summed in float64 (exact squares of
  32- and 16-bit inputs; no overflow for finite values); chunks are merged in a fixed order, so results
  do not depend on the thread count.
- CUDA: squares of float32/float16/bfloat16 values are summed in float32 over one 16-byte vector (at
  most 8 elements, < 5e-7 relative) and those sums added in float64; the (up to four) vectors loaded
  together are redone in float64 when one holds NaN/Inf or their float sums overflowed or may have
  underflowed. float64 stays in float64. Blocks add their totals with atomics, so the last bits may
  vary between runs. CPU and CUDA agree within 1e-6 relative (tests/gradscan/test_cudaemu.py runs the kernel's
  source on the CPU).
- torch fallback: float64 throughout (the tests' oracle).
"""
from __future__ import annotations

import sys
import types

from ._records import ALL_ZERO, NO_GRADIENT, NON_FINITE, ParamRecord, Problem, ScanReport

# Everything that needs torch (or transformers) is imported on first use: the package's pure parts
# (records, verdicts) are read by commands that never scan (`benchsuite list`, `watch` itself, doctor),
# and the callback module subclasses transformers.TrainerCallback, which a watched script may not import.
_LAZY = {
    "native_available": ("_native", "available"), "tensor_stats": ("_oracle", "tensor_stats"),
    "AsyncScanner": ("_scan", "AsyncScanner"), "named_trainable": ("_scan", "named_trainable"),
    "scan": ("_scan", "scan"), "scan_tensors": ("_scan", "scan_tensors"),
    "CompareReport": ("compare", "CompareReport"), "compare": ("compare", "compare"),
    "GradientProblemError": ("callback", "GradientProblemError"), "GradScanCallback": ("callback", "GradScanCallback"),
    "GradScanHook": ("callback", "GradScanHook"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        # Bound here once: importing the submodule `compare` set the package's `compare` to the module,
        # and the function is what `from benchsuite.gradscan import compare` has always given.
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ALL_ZERO", "NO_GRADIENT", "NON_FINITE", "AsyncScanner", "GradScanCallback", "GradScanHook",
    "GradientProblemError", "ParamRecord", "Problem", "ScanReport", "named_trainable", "native_available",
    "scan", "scan_tensors", "tensor_stats", "compare", "CompareReport",
]


class _Package(types.ModuleType):
    """``benchsuite.gradscan.compare`` is the function (the API above), also after the submodule of the same
    name was imported: the import system then sets the package's attribute to the module, which would
    shadow the function for ``from benchsuite.gradscan import compare``. The module stays in sys.modules."""

    def __setattr__(self, name, value):
        if name == "compare" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
