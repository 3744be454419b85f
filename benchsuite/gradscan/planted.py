"""Planted values: tensors whose statistics are known, for the scanner's self-checks (defined in _probes.py;
this module keeps the names the tests and the emulator import).

One generator serves three users: the self-check that the first CUDA scan of a process runs on each
device (``self_check``, small), ``benchsuite selftest`` (benchsuite/selftest.py: the full suite on every
backend present), and the tests, which run the same suite through the kernel's source on the CPU.

The reference is computed with NumPy in float64 from the raw bits (bfloat16 decoded by hand), so it is
independent of torch's kernels and of the scanner: torch's own statistics are one more backend checked.
"""
from __future__ import annotations

from ._cuda import self_check  # noqa: F401 (re-exported: the first-use check lives with the CUDA route)
from ._probes import (  # noqa: F401 (re-exported for the tests and the emulator)
    CHUNK,
    THREADS,
    Suite,
    bits,
    boundary_sizes,
    full_suite,
    mismatches,
    planted,
    probe_suite,
    reference,
    specials,
    vec,
)
from ._probes import dtypes as _dtypes

DTYPES = _dtypes()  # the scanner's dtypes, as the tests and the emulator iterate them (imports torch)
