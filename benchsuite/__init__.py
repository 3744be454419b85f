"""benchsuite: reproducible training failures, a fused gradient scanner, memory/throughput benchmarks."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
