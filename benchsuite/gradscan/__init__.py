"""benchsuite.gradscan: per-parameter gradient health in one fused pass.

>>> from benchsuite.gradscan import scan
>>> report = scan(model)            # after loss.backward()
>>> report.problems                 # no-gradient, non-finite, all-zero, with parameter names
>>> [r for r in report if r.nan]    # per-parameter records

How the numbers are computed (CPU and CUDA alike): each element is classified as NaN, +Inf, -Inf or
exact zero (-0.0 included); finite values are widened to float64, squared exactly in float64 (a
float32, float16 or bfloat16 square fits a double's mantissa) and summed in float64 per thread and
chunk, then across chunks (CPU: in a fixed order; CUDA: by atomics, so the last bits may vary between
runs). max |x| is taken over finite values only.
"""
from __future__ import annotations

from ._native import available as native_available
from ._oracle import tensor_stats
from ._records import ALL_ZERO, NO_GRADIENT, NON_FINITE, ParamRecord, Problem, ScanReport
from ._scan import AsyncScanner, named_trainable, scan, scan_tensors
from .callback import GradientProblemError, GradScanCallback, GradScanHook

__all__ = [
    "ALL_ZERO", "NO_GRADIENT", "NON_FINITE", "AsyncScanner", "GradScanCallback", "GradScanHook",
    "GradientProblemError", "ParamRecord", "Problem", "ScanReport", "named_trainable", "native_available",
    "scan", "scan_tensors", "tensor_stats",
]
