"""What watch keeps per model: one tracker of the gradient verdicts, the loss and learning-rate series, the
"moved" references, coverage, step numbers. A model is a Trainer's training (its optimizer: each train() of each
Trainer is one) or, outside a Trainer, the module that owns the optimizer's tensors. Nothing judged on one model's
tensors is reported about another's; everything ends with the model."""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field

from ..gradscan import verdicts as V
from . import kinds as K
from .loss import LossTrack
from .lr import LrTrack

# Trainers where a whole batch can carry no signal (every advantage 0): a gradient zero everywhere is healthy there.
RL_TRAINERS = re.compile(r"GRPO|RLOO|PPO|Reinforce|OnlineDPO|XPO|NashMD|GSPO|DAPO", re.I)
EVERYWHERE = "(every parameter)"
LOSS = "(the loss)"
LR = "(the learning rate)"
RL_SIGNAL_FRACTION = 0.5   # more than this fraction of an RL run's steps without signal is a finding


@dataclass
class ModelTracker(V.Tracker):
    """The scanner's verdicts for one model, plus the findings about its loss, learning rate and RL signal."""

    rl: bool = False
    extra: dict = field(default_factory=dict)          # kind -> {"since", "cause", "signs", "evidence"} (active now)
    details: dict = field(default_factory=dict)        # kind -> the latest details of that finding
    zero_streak: int = 0
    zero_since: int | None = None

    def count_zero_step(self, everywhere_zero: bool, step: int) -> None:
        if everywhere_zero:
            self.zero_streak += 1
            self.zero_since = self.zero_since if self.zero_since is not None else step
        else:
            self.zero_streak, self.zero_since = 0, None

    def _active(self, final: bool) -> dict[str, dict[str, int | None]]:
        act = super()._active(final)
        if not self.rl and (self.zero_streak >= self.confirm or EVERYWHERE in act[V.NO_SIGNAL]):
            # Outside RL nothing excuses a gradient that is zero everywhere: it is judged like any all-zero one.
            act[V.NO_SIGNAL] = {EVERYWHERE: self.zero_since if self.zero_streak else self.zero_steps[0]}
            self.details[V.NO_SIGNAL] = {"cause": K.ZERO_EVERYWHERE_CAUSE,
                                         "evidence": f"exactly zero everywhere at {len(self.zero_steps)} of "
                                                     f"{self.scans} steps"}
        if self.rl and final and self.scans and len(self.zero_steps) < self.scans and len(self.zero_steps) >= 3 \
                and len(self.zero_steps) > RL_SIGNAL_FRACTION * self.scans:
            frac = len(self.zero_steps) / self.scans
            act[K.RL_FEW_SIGNAL] = {EVERYWHERE: self.zero_steps[0]}
            self.details[K.RL_FEW_SIGNAL] = {
                "cause": "most batches had zero advantage (every group's rewards equal: all solved or all failed), so "
                         "those steps trained nothing: make the task harder/easier, use larger groups "
                         "(num_generations) or a graded reward",
                "evidence": f"{len(self.zero_steps)} of {self.scans} steps ({frac:.0%}) with a gradient of exactly "
                            "zero everywhere", "signs": K.SIGNS[K.RL_FEW_SIGNAL]}
        for kind, d in self.extra.items():
            act.setdefault(kind, {})[LR if kind == K.LR_TINY else LOSS] = d["since"]
            self.details[kind] = d
        order = {k: i for i, k in enumerate(K.ORDER)}
        return dict(sorted(act.items(), key=lambda kv: order.get(kv[0], len(order))))

    def report(self) -> list[dict]:
        out = [f for f in super().report()]
        known = {f["kind"] for f in out}
        for kind, names in self.findings.items():
            if kind in known or kind in V.TITLES:
                continue
            for cleared in (False, True):
                entries = [e for e in names.values() if (e.cleared_at is not None) == cleared]
                if not entries:
                    continue
                since = [e.since for e in entries if isinstance(e.since, int)]
                out.append({"kind": kind, "title": K.title(kind), "cause": "", "count": len(entries),
                            "names": list(names), "since_step": min(since) if since else None,
                            "confirmed_at": entries[0].confirmed_at, "status": "cleared" if cleared else "open",
                            "cleared_at": max(e.cleared_at or 0 for e in entries) if cleared else None})
        for f in out:
            d = self.details.get(f["kind"]) or {}
            if d.get("cause"):
                f["cause"] = d["cause"]
            if d.get("evidence"):
                f["evidence"] = d["evidence"]
            f["signs"] = list(dict.fromkeys(K.SIGNS.get(f["kind"], []) + list(d.get("signs") or [])))
            f["title"] = K.title(f["kind"]) if f["kind"] != V.NO_SIGNAL or self.rl else \
                "the gradient was exactly zero everywhere"
        order = {k: i for i, k in enumerate(K.ORDER)}
        return sorted(out, key=lambda f: order.get(f["kind"], len(order)))


class ModelState:
    """One model (or optimizer) and everything watch judges about it."""

    def __init__(self, order: int, label: str, root=None, trainer=None, rl: bool = False, confirm: int = 3):
        self.order = order
        self.label = label
        self.root_ref = weakref.ref(root) if root is not None else None
        self.trainer = trainer                  # (model, TrainerState) under a Trainer
        self.trainer_class: str | None = None
        self.total_steps: int | None = None     # the Trainer's max_steps
        self.base_lr: float | None = None       # the Trainer's learning_rate
        self.tracker = ModelTracker(confirm=confirm, rl=rl)
        self.loss = LossTrack()
        self.lr = LrTrack()
        self.weak: dict[str, weakref.ref] = {}
        self.coverage: dict = {"ids": set(), "steps": 0, "uncovered": [], "current": []}
        self.params_cache: tuple | None = None
        self.groups: tuple = (None, None)
        self.steps = 0
        self.first_step: int | None = None
        self.last_counts: dict | None = None
        self.hook = None                        # the forward pre-hook that reads the labels
        self.ended = False

    @property
    def root(self):
        return self.root_ref() if self.root_ref is not None else None

    def evaluate(self, step, final: bool, scaler_seen: bool) -> list:
        t = self.tracker
        t.extra = {**self.loss.active(final, t.confirm, t.rl, scaler_seen), **self.lr.active(final, t.confirm)}
        return t.evaluate(step, final=final)

    def summary(self) -> dict:
        findings = self.tracker.report()
        for f in findings:
            f["model"] = self.label
        return {"order": self.order, "label": self.label, "trainer_class": self.trainer_class, "rl": self.tracker.rl,
                "optimizer_steps": self.steps, "first_step": self.first_step, "last_step": self.tracker.last_step,
                "scans": self.tracker.scans, "params": self.last_counts, "findings": findings,
                "zero_gradient_steps": self.tracker.zero_steps, "losses": self.loss.summary(),
                "learning_rate": self.lr.summary(), "ended": self.ended}
