"""The loss as watch sees it: the scalar each backward() propagates (unscaled when it came through a GradScaler,
before any logging filter), and whether the batches that passed through the model carried a label that is not
-100. ``LossFeed`` collects them between two optimizer steps (one per process); ``LossTrack`` keeps one model's
series and judges it: a non-finite loss, a loss that stays exactly constant, a loss that diverges while the
gradients stay finite."""
from __future__ import annotations

import math
import weakref

from . import kinds as K

LOG2 = math.log(2.0)
LOG2_TOL = 1.2e-7       # log 2 in float32, within two units in the last place: a pairwise loss of margin ~0
FLAT_STEPS = 5          # a loss equal to the bit at this many steps in a row is "exactly constant"
DIVERGE_FACTOR = 10.0   # the recent losses' median above this many times the first ones'...
DIVERGE_MARGIN = 1.0    # ...and above them by this much
MAX_KEPT = 1000         # losses kept per model for the summary (evenly thinned beyond)


class LossFeed:
    """What passed through backward() and the watched models' forward since the last optimizer step."""

    def __init__(self):
        self.pending: list = []      # detached scalar losses
        self.labels: list = []       # (numel, any label != -100 as a 0-dim bool tensor) per forward with labels
        self.scaled: dict = {}       # id(scaled loss) -> (weakref to it, the loss before scaling)
        self.scaler_seen = False

    def scaled_by(self, result, loss) -> None:
        """GradScaler.scale(loss) returned ``result``: its backward is the loss's."""
        self.scaler_seen = True
        if getattr(result, "numel", None) is not None and result.numel() == 1:
            if len(self.scaled) > 16:
                self.scaled.clear()
            self.scaled[id(result)] = (weakref.ref(result), loss.detach())

    def backward(self, tensor, gradient) -> None:
        if gradient is not None or not hasattr(tensor, "numel") or tensor.numel() != 1:
            return
        entry = self.scaled.pop(id(tensor), None)
        value = entry[1] if entry is not None and entry[0]() is tensor else tensor.detach()
        self.pending.append(value.reshape(()).float())
        if len(self.pending) > 256:  # a long accumulation: fold what came so far
            import torch
            self.pending = [torch.stack(self.pending).sum()]

    def forward(self, kwargs) -> None:
        labels = kwargs.get("labels")
        if labels is None or not hasattr(labels, "dtype") or labels.dtype.is_floating_point:
            ids = kwargs.get("input_ids")
            if ids is not None and hasattr(ids, "numel") and ids.numel() == 0:
                self.labels.append((0, None))
            return
        if len(self.labels) < 256:
            self.labels.append((labels.numel(), (labels != -100).any() if labels.numel() else None))

    def take(self) -> tuple[float | None, str | None]:
        """(the step's loss: the sum of what was backpropagated since the last step, or None; what its batches'
        labels were: None (not seen), "valid", "masked" (every label -100) or "empty")."""
        value = None
        if self.pending:
            import torch
            value = float(torch.stack(self.pending).sum()) if len(self.pending) > 1 else float(self.pending[0])
        labels = None
        if self.labels:
            if any(n and bool(v) for n, v in self.labels):
                labels = "valid"
            elif all(n == 0 for n, _ in self.labels):
                labels = "empty"
            else:
                labels = "masked"
        self.pending, self.labels = [], []
        return value, labels


class LossTrack:
    """One model's losses, step by step, and the findings they support."""

    def __init__(self):
        self.values: list[tuple[int, float]] = []     # (step, loss) for every scanned step with a loss
        self.nonfinite_steps: list[int] = []
        self.nonfinite_streak = 0
        self.label_states: dict[str, int] = {}         # labels state at non-finite steps -> count
        self.flat_streak = 0
        self.flat_since: int | None = None
        self.first: list[float] = []
        self.recent: list[float] = []
        self.diverge_streak = 0
        self.diverge_since: int | None = None
        self.low_precision: set[str] = set()
        self.grads_finite = True

    def add(self, step: int, value: float | None, labels: str | None, grads_finite: bool) -> None:
        if value is None:
            return
        prev = self.values[-1][1] if self.values else None
        self.values.append((step, value))
        self.grads_finite = grads_finite
        if not math.isfinite(value):
            self.nonfinite_steps.append(step)
            self.nonfinite_streak += 1
            self.label_states[labels or "unknown"] = self.label_states.get(labels or "unknown", 0) + 1
            self.flat_streak, self.flat_since = 0, None
            self.diverge_streak, self.diverge_since = 0, None
            return
        self.nonfinite_streak = 0
        same = prev is not None and (value == prev or (abs(value - LOG2) <= LOG2_TOL and abs(prev - LOG2) <= LOG2_TOL))
        if same and value != 0.0:
            self.flat_streak += 1
            self.flat_since = self.flat_since if self.flat_since is not None else self.values[-2][0]
        else:
            self.flat_streak, self.flat_since = 1, step
        if len(self.first) < 3:
            self.first.append(value)
        self.recent = (self.recent + [value])[-3:]
        if self._diverging() and grads_finite:
            self.diverge_streak += 1
            self.diverge_since = self.diverge_since if self.diverge_since is not None else step
        else:
            self.diverge_streak, self.diverge_since = 0, None

    def _diverging(self) -> bool:
        finite = len(self.values) - len(self.nonfinite_steps)
        if finite < 6 or len(self.first) < 3:
            return False
        a, b = sorted(self.first)[1], sorted(self.recent)[1]
        return a > 0 and b > DIVERGE_FACTOR * a and b - a > DIVERGE_MARGIN

    def active(self, final: bool, confirm: int, rl: bool, scaler_seen: bool) -> dict[str, dict]:
        """{kind: {"since", "cause", "signs", "evidence"}} for the loss findings whose evidence is complete. The
        loss is "exactly constant" when it repeats to the bit (or stays at log 2 within float32's rounding) at
        FLAT_STEPS steps in a row."""
        out: dict[str, dict] = {}
        n = len(self.nonfinite_steps)
        if n and (self.nonfinite_streak >= confirm or (final and (n >= confirm or n == len(self.values)))):
            out[K.LOSS_NONFINITE] = self._nonfinite(scaler_seen)
        if not rl and self.flat_streak >= FLAT_STEPS:
            value = self.values[-1][1]
            log2 = abs(value - LOG2) <= LOG2_TOL
            cause = ("the loss is log 2 = 0.6931 at every step: a pairwise/preference loss (DPO, a reward model) "
                     "whose chosen and rejected cannot be told apart (identical pairs, a margin that is always 0, a "
                     "reward read where both sequences are the same), so its gradient is rounding noise"
                     if log2 else
                     "the loss does not depend on the trainable weights or does not change with them: nothing "
                     "trains (see the other findings), or the loss is computed from something detached")
            out[K.LOSS_FLAT] = {"since": self.flat_since, "cause": cause,
                                "signs": ["loss-flat"] + (["loss-log2"] if log2 else []),
                                "evidence": f"the loss is {value:.6g} at {self.flat_streak} steps in a row"
                                            + (" (log 2)" if log2 else "")}
        if not rl and self.diverge_streak >= confirm:
            out[K.LOSS_DIVERGING] = self._diverging_entry(scaler_seen)
        return out

    def _nonfinite(self, scaler_seen: bool) -> dict:
        states = self.label_states
        n = len(self.nonfinite_steps)
        if states.get("masked", 0) + states.get("empty", 0) == n - states.get("unknown", 0) > 0:
            cause = ("every label of the batch is -100 (masked) at these steps: there is no token to predict and the "
                     "mean over 0 tokens is NaN (the Trainer logs 0.0 in its place); check the collator's masking "
                     "(completion-only/assistant masks, truncation that drops every completion)"
                     if states.get("masked") else
                     "the batch is empty at these steps (no label, no token): the mean over 0 elements is NaN")
        elif "float16" in self.low_precision and not scaler_seen:
            cause = "fp16 overflow: float16 weights or autocast without a GradScaler"
        else:
            cause = ("NaN/Inf in the forward pass: the inputs, non-finite weights (see the non-finite gradient "
                     "finding), or a division by zero in the loss")
        first = self.nonfinite_steps[0]
        return {"since": first, "cause": cause, "signs": ["loss-nonfinite", "loss-zero"],
                "evidence": f"the loss was non-finite at {n} of {len(self.values)} steps, first at step {first}"
                            + (f"; every label was -100 at {states['masked']} of them" if states.get("masked")
                               else "")
                            + (f" ({states['unknown']} before the labels were seen)" if states.get("unknown")
                               and states.get("masked") else "")}

    def _diverging_entry(self, scaler_seen: bool) -> dict:
        a, b = sorted(self.first)[1], sorted(self.recent)[1]
        if "float16" in self.low_precision and not scaler_seen:
            cause = ("float16 weights trained without a GradScaler (and with AdamW's eps rounding to 0 in fp16): "
                     "the updates blow the weights up; keep float32 master weights and use fp16 autocast with a "
                     "GradScaler")
        else:
            cause = "the learning rate is too high for this model and optimizer, or the updates are not clipped"
        return {"since": self.diverge_since, "cause": cause, "signs": ["loss-diverging"],
                "evidence": f"the loss went from {a:.4g} to {b:.4g} (median of the first and last 3 steps) while "
                            "every gradient stayed finite"}

    def summary(self) -> list:
        values = [v for _, v in self.values]
        if len(values) > MAX_KEPT:
            stride = len(values) / MAX_KEPT
            values = [values[int(i * stride)] for i in range(MAX_KEPT)]
        # "nan"/"inf" as text: strict JSON, and still numbers to doctor --log
        return [v if math.isfinite(v) else str(v) for v in values]
