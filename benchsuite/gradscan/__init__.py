"""benchsuite.gradscan: per-parameter gradient health in one fused pass.

>>> from benchsuite.gradscan import scan
>>> report = scan(model)            # after loss.backward()
>>> report.problems                 # no-gradient, non-finite, all-zero, with parameter names
>>> [r for r in report if r.nan]    # per-parameter records

How the numbers are computed: each element is classified as NaN, +Inf, -Inf or exact zero (-0.0
included); max |x| and the sum of squares cover finite values only.
- CPU (benchsuite._core): float32/float16/bfloat16 values are squared in float32 and summed in float32
  over runs of 256 consecutive elements (one SIMD accumulator per lane), and the run totals are added in
  float64; float64 tensors stay in float64 throughout. Chunks are merged in a fixed order, so results do
  not depend on the thread count. Relative error of a sum: about 256 x 2^-24 at worst, ~1e-9 typical.
- CUDA: every finite value is widened to float64 and squared there (exact for 32- and 16-bit inputs),
  summed in float64 per thread, then across the block; blocks add their totals with atomics, so the
  last bits may vary between runs.
- torch fallback: float64 throughout (the tests' oracle).
"""
from __future__ import annotations

from ._native import available as native_available
from ._oracle import tensor_stats
from ._records import ALL_ZERO, NO_GRADIENT, NON_FINITE, ParamRecord, Problem, ScanReport
from ._scan import AsyncScanner, named_trainable, scan, scan_tensors

# The callback module subclasses transformers.TrainerCallback: it is imported on first use only, so that
# importing the scanner (as `benchsuite watch` does inside a script) never imports transformers.
_CALLBACK_NAMES = ("GradientProblemError", "GradScanCallback", "GradScanHook")


def __getattr__(name):
    if name in _CALLBACK_NAMES:
        from . import callback
        return getattr(callback, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ALL_ZERO", "NO_GRADIENT", "NON_FINITE", "AsyncScanner", "GradScanCallback", "GradScanHook",
    "GradientProblemError", "ParamRecord", "Problem", "ScanReport", "named_trainable", "native_available",
    "scan", "scan_tensors", "tensor_stats",
]
