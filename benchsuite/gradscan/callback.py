"""Put the scanner in a training loop: a transformers Trainer callback and a plain hook."""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import IO

import torch

from ._records import ScanReport, log_line  # noqa: F401  (log_line: re-exported)
from ._scan import Source, scan

POLICIES = ("warn", "raise", "record")


class GradientProblemError(RuntimeError):
    """Raised by policy='raise' when a scan finds a problem; carries the report."""

    def __init__(self, report: ScanReport):
        super().__init__(report.summary())
        self.report = report


class GradScanHook:
    """Scans a model's gradients after backward in a hand-written loop.

    Call ``hook(step)`` between ``backward()`` and ``optimizer.step()``, or let ``attach(optimizer)``
    call it from the optimizer's step pre-hook. Policy: "warn" (one warning per new problem),
    "raise" (GradientProblemError at the first problem) or "record" (only log and keep reports).
    ``log_path`` gets one JSON line per scanned step.
    """

    def __init__(self, model: Source, policy: str = "warn", log_path: str | os.PathLike | None = None,
                 every: int = 1, backend: str = "auto", keep: bool = True):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if every < 1:
            raise ValueError("every must be >= 1")
        self.model = model
        self.policy = policy
        self.every = every
        self.backend = backend
        self.keep = keep
        self.reports: list[ScanReport] = []
        self.seconds = 0.0
        self.scans = 0
        self._seen: set[tuple[str, str]] = set()
        self._log: IO[str] | None = open(log_path, "a", encoding="utf-8") if log_path else None
        self._calls = 0

    def __call__(self, step: int | None = None) -> ScanReport | None:
        step = self._calls if step is None else step
        self._calls += 1
        if step % self.every:
            return None
        t0 = time.perf_counter()
        report = scan(self.model, backend=self.backend, step=step)
        self.seconds += time.perf_counter() - t0
        self.scans += 1
        if self.keep:
            self.reports.append(report)
        if self._log:
            self._log.write(json.dumps(log_line(report)) + "\n")
            self._log.flush()
        if report.problems:
            if self.policy == "raise":
                raise GradientProblemError(report)
            if self.policy == "warn":
                fresh = [p for p in report.problems if any((p.kind, n) not in self._seen for n in p.names)]
                for p in fresh:
                    self._seen.update((p.kind, n) for n in p.names)
                    warnings.warn(f"benchsuite.gradscan step {step}: {p}", RuntimeWarning, stacklevel=2)
        return report

    def attach(self, optimizer: torch.optim.Optimizer):
        """Scan before every optimizer.step(); returns the handle (``.remove()`` to detach)."""
        def pre_step(opt, args, kwargs):
            self()
            return None  # a step pre-hook must return None or new (args, kwargs)

        return optimizer.register_step_pre_hook(pre_step)

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None


def _trainer_callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:  # pragma: no cover
        return object
    return TrainerCallback


class GradScanCallback(_trainer_callback_base()):
    """transformers.Trainer callback: scans every trainable gradient before each optimizer step.

    It runs at ``on_pre_optimizer_step`` (gradients are complete, after clipping). Transformers
    releases without that event (< 4.46) get the scan at ``on_step_end`` only if gradients are still
    there, which they usually are not; use a recent transformers or GradScanHook there.
    """

    def __init__(self, policy: str = "warn", log_path: str | os.PathLike | None = None, every: int = 1,
                 backend: str = "auto"):
        self._args = dict(policy=policy, log_path=log_path, every=every, backend=backend)
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        self.hook: GradScanHook | None = None

    @property
    def reports(self) -> list[ScanReport]:
        return self.hook.reports if self.hook else []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        if self.hook is None or self.hook.model is not model:
            self.hook = GradScanHook(model, **self._args)
        self.hook(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.hook:
            self.hook.close()
