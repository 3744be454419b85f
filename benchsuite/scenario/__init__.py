"""The scenario toolkit: what a case's trigger and fixes get as ``ctx`` and what they return.

``Context`` (tiny models built from configs, batches and datasets, LoRA configs, the training loops
``ctx.train`` and ``ctx.trainer_train``, ``ctx.observed``), ``TrainResult`` (a scenario's outcome) and
``healthy_problems`` (how the harness judges a fix's training). The declarations a case file makes
(``Case``, ``Symptom``, ``Fix``, ``Explains``) are in benchsuite/case.py, which re-exports these names, so
``from benchsuite.case import Context, TrainResult`` keeps working. See docs/adding-a-case.md.

Layout: ``context.py`` (Context), ``result.py`` (TrainResult, healthy_problems), ``launch.py`` (the ranks of
``ctx.torchrun``, under torch's elastic launcher).
"""
from __future__ import annotations

from .context import Context
from .result import TrainResult, _current_result, _names, healthy_problems

__all__ = ["Context", "TrainResult", "healthy_problems", "_current_result", "_names"]
