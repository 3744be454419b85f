"""Put the scanner in a training loop: a transformers Trainer callback and a plain hook."""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import IO, TYPE_CHECKING, Any, Callable

import torch

from . import verdicts
from ._records import ScanReport, log_line  # noqa: F401  (log_line: re-exported)
from ._scan import Source, named_trainable, scan

POLICIES = ("warn", "raise", "record")


class GradientProblemError(RuntimeError):
    """Raised by policy='raise' at a confirmed finding; carries the step's report and the findings."""

    def __init__(self, report: ScanReport, message: str | None = None, findings: list[dict] | None = None):
        super().__init__(message or report.summary())
        self.report = report
        self.findings = findings or []


class GradScanHook:
    """Scans a model's gradients after backward in a hand-written loop.

    Call ``hook(step)`` between ``backward()`` and ``optimizer.step()``, or let ``attach(optimizer)``
    call it from the optimizer's step pre-hook (then the learning rates are known too, and "never
    changed" / "learning rate 0" can be judged). Every scan's report keeps the raw per-step problems;
    the policy acts on *findings*, which rest on evidence over several steps (see
    ``benchsuite.gradscan.verdicts``): "warn" (one RuntimeWarning per confirmed finding), "raise"
    (GradientProblemError at the first confirmed finding) or "record" (only log and keep reports).
    A zero gradient at one step (an RL batch with zero advantage) is not a finding; no gradient for
    ``confirm`` steps in a row is. ``findings()`` gives the state now (call ``close()`` at the end for
    the final verdicts). ``log_path`` gets one JSON line per scanned step. ``describe_known(kind, names)``
    returns a line naming what explains a finding, added to its message (e.g.
    ``benchsuite.catalogue.known_cases_text``: the catalogue's cases and fixes); the scanner itself knows
    no catalogue.
    """

    def __init__(self, model: Source, policy: str = "warn", log_path: str | os.PathLike | None = None,
                 every: int = 1, backend: str = "auto", keep: bool = True, confirm: int = 3,
                 describe_known: Callable[[str, list[str]], str] | None = None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if every < 1 or confirm < 1:
            raise ValueError("every and confirm must be >= 1")
        self.model = model
        self.policy = policy
        self.every = every
        self.backend = backend
        self.keep = keep
        self.describe_known = describe_known
        self.reports: list[ScanReport] = []
        self.seconds = 0.0
        self.scans = 0
        self.tracker = verdicts.Tracker(confirm=confirm)
        self._optimizer: torch.optim.Optimizer | None = None
        self._params: dict[str, torch.Tensor] = {}
        self._log: IO[str] | None = open(log_path, "a", encoding="utf-8") if log_path else None
        self._calls = 0
        self._closed = False
        self._last: ScanReport | None = None

    def __call__(self, step: int | None = None, judge: bool = True) -> ScanReport | None:
        """Scan now; ``judge=False`` leaves the verdicts to a later ``judge(step)`` (after the optimizer
        step, once it is known whether it happened)."""
        step = self._calls if step is None else step
        self._calls += 1
        if step % self.every:
            return None
        t0 = time.perf_counter()
        report = scan(self.model, backend=self.backend, step=step)
        self._params = dict(named_trainable(self.model))
        lrs: dict[str, float | None] = \
            verdicts.group_lrs(self._optimizer, {id(p): n for n, p in self._params.items()}) \
            if self._optimizer is not None else {}
        explained = {r.name for r in report.records if r.expected_zero}
        self.tracker.observe(step, report.records, lrs, explained, self._checksums)
        self.seconds += time.perf_counter() - t0
        self.scans += 1
        if self.keep:
            self.reports.append(report)
        self._last = report
        if judge:
            self.judge(step)
        return report

    def judge(self, step: int, skipped: bool = False) -> None:
        """Take the verdicts after the scan of ``step``; ``skipped``: that optimizer step did not happen."""
        report = self._last
        if skipped:
            self.tracker.skipped(step)
        new = self.tracker.evaluate(step)
        if self._log and report is not None:
            line = log_line(report)
            line["confirmed"] = [{"kind": k, "names": v} for k, v in new]
            line["skipped"] = skipped
            self._log.write(json.dumps(line) + "\n")
            self._log.flush()
        dtype_of = {r.name: r.dtype for r in report.records} if report is not None else {}
        for kind, names in new:
            dtypes = {dtype_of[n] for n in names if n in dtype_of}
            text = (f"benchsuite.gradscan step {step}: {verdicts.TITLES[kind]} in {len(names)} parameter(s): "
                    f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}; likely cause: "
                    f"{verdicts.cause(kind, dtypes)}")
            if self.policy in ("raise", "warn") and self.describe_known is not None:
                known = self.describe_known(kind, names)
                text += f"; {known}" if known else ""
            if self.policy == "raise":
                assert report is not None  # a finding rests on scans: there was one
                raise GradientProblemError(report, text, self.tracker.report())
            if self.policy == "warn":
                warnings.warn(text, RuntimeWarning, stacklevel=2)

    def _checksums(self, names: list[str]) -> dict[str, tuple]:
        return verdicts.checksums([(n, self._params[n]) for n in names if n in self._params])

    def findings(self) -> list[dict]:
        """Every finding confirmed so far, with its cause and state (open or cleared)."""
        return self.tracker.report()

    def attach(self, optimizer: torch.optim.Optimizer):
        """Scan before every optimizer.step(); returns the handle (``.remove()`` to detach)."""
        self._optimizer = optimizer

        def pre_step(opt, args, kwargs):
            self()
            return None  # a step pre-hook must return None or new (args, kwargs)

        return optimizer.register_step_pre_hook(pre_step)

    def close(self) -> None:
        """End of training: the final verdicts (e.g. a parameter that never once got a gradient)."""
        if not self._closed and self.scans:
            self._closed = True
            self.tracker.finish(self._checksums)
            self.tracker.evaluate("end", final=True)
        if self._log:
            self._log.close()
            self._log = None


def _trainer_callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:  # pragma: no cover
        return object
    return TrainerCallback


if TYPE_CHECKING:  # what the base is wherever transformers is installed
    from transformers import TrainerCallback as _TrainerCallbackBase
else:
    _TrainerCallbackBase = _trainer_callback_base()


class GradScanCallback(_TrainerCallbackBase):
    """transformers.Trainer callback: scans every trainable gradient before each optimizer step.

    It scans at ``on_pre_optimizer_step`` (gradients are complete, after clipping) and takes the verdicts
    at ``on_step_end``, once it is known whether the step happened: with fp16 a GradScaler skips steps
    whose gradients hold Inf/NaN, and those are not findings. Steps are numbered as the Trainer logs them
    (1, 2, ...). Transformers releases without ``on_pre_optimizer_step`` (< 4.46) cannot be scanned
    here: use ``benchsuite watch`` (torch's global optimizer hook) or GradScanHook there.
    """

    def __init__(self, policy: str = "warn", log_path: str | os.PathLike | None = None, every: int = 1,
                 backend: str = "auto", confirm: int = 3,
                 describe_known: Callable[[str, list[str]], str] | None = None):
        self._args: dict[str, Any] = dict(policy=policy, log_path=log_path, every=every, backend=backend,
                                          confirm=confirm, describe_known=describe_known)
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        self.hook: GradScanHook | None = None
        self._pending: int | None = None

    @property
    def reports(self) -> list[ScanReport]:
        return self.hook.reports if self.hook else []

    def findings(self) -> list[dict]:
        return self.hook.findings() if self.hook else []

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None:
            return
        if self.hook is None or self.hook.model is not model:
            self.hook = GradScanHook(model, **self._args)
        if optimizer is not None:
            self.hook._optimizer = getattr(optimizer, "optimizer", optimizer)
        step = state.global_step + 1
        if self.hook(step, judge=False) is not None:
            self._pending = step

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if self.hook is not None and self._pending is not None:
            step, self._pending = self._pending, None
            self.hook.judge(step, skipped=bool(getattr(optimizer, "step_was_skipped", False)))

    def on_train_end(self, args, state, control, **kwargs):
        if self.hook:
            self.hook.close()
