"""The learning rate each model's optimizer used, the schedule that produced it, and how far its weights really
moved per step. A run is reported when its learning rate stays orders of magnitude below the configured one for
the whole run (a warmup longer than the run, a scheduler stepped per epoch instead of per step) and the weights
practically do not move. Warmups of a few steps and a decay to nearly 0 at the end are healthy: the peak over the
run is what counts."""
from __future__ import annotations

import math
import weakref

from . import kinds as K

LOW = 1e-2          # the learning rate stays below this fraction of the configured one...
STILL = 1e-4        # ...and the weights' relative change per step stays below this (AdamW at lr 1e-5 moves weights
                    # of rms 0.02 by ~5e-4 per step; with the lr at 1/100 of the configured one this is lr-bound)
SAMPLED_TENSORS = 8
SAMPLED_ELEMENTS = 2048

_schedulers: dict[int, weakref.ref] = {}   # id(optimizer) -> its latest LR scheduler


def scheduler_made(scheduler) -> None:
    """An LRScheduler was built (LRScheduler.__init__, patched at import)."""
    opt = getattr(scheduler, "optimizer", None)
    if opt is not None:
        _schedulers[id(opt)] = weakref.ref(scheduler)


def scheduler_of(optimizer):
    ref = _schedulers.get(id(optimizer))
    s = ref() if ref is not None else None
    return s if s is not None and getattr(s, "optimizer", None) is optimizer else None


def describe(scheduler, total: int | None) -> str:
    """The schedule in words: its type and, for the transformers schedules, their warmup and length."""
    if scheduler is None:
        return "no LR scheduler"
    text = type(scheduler).__name__
    fns = getattr(scheduler, "lr_lambdas", None) or []
    kw = getattr(fns[0], "keywords", None) if fns else None
    name = getattr(getattr(fns[0], "func", None), "__name__", "") if fns else ""
    if kw:
        kind = name.replace("_get_", "").replace("_lr_lambda", "").replace("_", " ")
        text = f"{kind} ({', '.join(f'{k}={v}' for k, v in kw.items())})"
        warm = kw.get("num_warmup_steps")
        if warm and total and warm >= total:
            text += f": a warmup of {warm} steps, longer than the run ({total} steps)"
    return text


def schedule_length(scheduler) -> int | None:
    """The run length a transformers schedule was built for (its num_training_steps), or None."""
    fns = getattr(scheduler, "lr_lambdas", None) or []
    kw = getattr(fns[0], "keywords", None) if fns else None
    total = (kw or {}).get("num_training_steps")
    return int(total) if isinstance(total, int) and total > 0 else None


_multipliers: dict[tuple, list] = {}


def predicted_peak(scheduler, done: int, total: int | None) -> float | None:
    """The largest learning-rate multiplier a LambdaLR will give from now to the end of a run of ``total``
    optimizer steps (None when it cannot be known). The schedule is read once, at up to 500 points."""
    fns = getattr(scheduler, "lr_lambdas", None)
    if not fns or not total or total <= done:
        return None
    key = (id(scheduler), total)
    if key not in _multipliers:
        ks = sorted(set(list(range(0, total, max(1, total // 500))) + [total - 1]))
        try:
            _multipliers.clear()
            _multipliers[key] = [(k, max(float(f(k)) for f in fns)) for k in ks]
        except Exception:
            return None
    ahead = [v for k, v in _multipliers[key] if k >= done - 1]
    return max(ahead) if ahead else None


def _sample(p):
    flat = p.detach().reshape(-1)
    stride = max(1, flat.numel() // SAMPLED_ELEMENTS)
    return flat[::stride][:SAMPLED_ELEMENTS].float().clone()


class LrTrack:
    """One model's learning rates and, while they are low, the measured motion of its weights."""

    def __init__(self):
        self.base: float | None = None        # the configured learning rate (the schedule's initial_lr)
        self.peak: float | None = None        # the largest learning rate seen at a scan
        self.last: float | None = None
        self.low_streak = 0
        self.low_since: int | None = None
        self.motion: list[float] = []         # median relative change per step, measured while the lr was low
        self._samples: dict[str, tuple] = {}
        self.schedule = "no LR scheduler"
        self.peak_ahead: float | None = None  # what the schedule will give at most before the run ends
        self.sched_epoch: list[int] = []      # the scheduler's last_epoch at each low scan

    def observe(self, step: int, optimizer, named: list, base: float | None, total: int | None, count: int) -> None:
        seen = [_lr(g.get("lr")) for g in optimizer.param_groups if any(p.requires_grad for p in g["params"])]
        lrs = [x for x in seen if x is not None]
        if not lrs:
            return
        lr = max(lrs)
        initial = [x for x in (_lr(g.get("initial_lr")) for g in optimizer.param_groups) if x]
        self.base = base or (max(initial) if initial else self.base)
        self.peak = lr if self.peak is None else max(self.peak, lr)
        self.last = lr
        if self.base is None or not 0 < lr <= LOW * self.base:
            self.low_streak, self.low_since, self._samples = 0, None, {}
            return
        self.low_streak += 1
        self.low_since = self.low_since if self.low_since is not None else step
        sched = scheduler_of(optimizer)
        total = total or schedule_length(sched)
        self.schedule = describe(sched, total)
        self.peak_ahead = predicted_peak(sched, count, total) if sched is not None else None
        if sched is not None:
            self.sched_epoch.append(int(getattr(sched, "last_epoch", 0)))
        self._measure(named)

    def _measure(self, named: list) -> None:
        """The sampled weights' relative change since the last scan, over all sampled tensors together (so that
        a factor that has just left zero, such as lora_B, does not count as a large relative change)."""
        step = max(1, len(named) // SAMPLED_TENSORS)
        moved = ref = 0.0
        for n, p in named[::step][:SAMPLED_TENSORS]:
            now = _sample(p)
            prev = self._samples.get(n)
            self._samples[n] = (now,)
            if prev is not None and prev[0].shape == now.shape:
                moved += float((now - prev[0]).pow(2).sum())
                ref += float(prev[0].pow(2).sum())
        if ref > 0 and math.isfinite(ref) and math.isfinite(moved):
            self.motion.append(math.sqrt(moved / ref))

    def _still(self) -> bool:
        return bool(self.motion) and max(self.motion) < STILL

    def active(self, final: bool, confirm: int) -> dict[str, dict]:
        if not self.base or not self.peak or self.peak > LOW * self.base or not self.low_streak:
            return {}
        stuck_sched = len(self.sched_epoch) >= confirm and len(set(self.sched_epoch[-confirm:])) == 1
        certain = (self.peak_ahead is not None and self.peak_ahead <= LOW) or stuck_sched
        if not (final or (certain and self.low_streak >= confirm and self._still())):
            return {}
        if self.motion and not self._still():
            return {}
        why = self.schedule
        if stuck_sched:
            why += (f"; the scheduler's step count stayed at {self.sched_epoch[-1]} while the optimizer stepped: "
                    "it is stepped per epoch (or not at all) where the schedule counts optimizer steps")
        moved = (f"; the weights moved by a relative {max(self.motion):.2g} per step at most" if self.motion else "")
        return {K.LR_TINY: {
            "since": self.low_since, "signs": ["lr-zero"],
            "cause": f"the learning rate never rose above {self.peak:.3g} ({self.peak / self.base:.2g} of the "
                     f"configured {self.base:.3g}): {why}. Shorten the warmup (warmup_steps/warmup_ratio) to a "
                     "fraction of the run, or step the scheduler once per optimizer step",
            "evidence": f"learning rate at most {self.peak:.3g} of {self.base:.3g} configured{moved}"}}

    def summary(self) -> dict:
        return {"configured": self.base, "peak": self.peak, "last": self.last}


def _lr(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
