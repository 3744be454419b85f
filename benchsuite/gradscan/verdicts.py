"""Findings from evidence gathered over a run, re-evaluated at every scan.

A parameter is judged on what was seen, never on one step alone:

* **no gradient**: ``.grad`` was None at ``confirm`` scans in a row and never anything else (or, for a
  parameter that had gradients before, at ``lost`` scans in a row); at the end of the run, a parameter
  that never once got a gradient.
* **all-zero gradient**: the same for an exactly zero gradient that nothing explains. A zero that a
  zero partner factor explains (``lora_A`` while its ``lora_B`` is still zero, ``lora_embedding_B``
  while its ``lora_embedding_A`` is) does not count, nor does a step whose gradient is zero everywhere
  (an RL batch with zero advantage): such steps are counted, not judged.
* **non-finite gradient**: NaN or Inf reached an optimizer step that ran (a GradScaler that skips the
  step never calls it). Final at once.
* **never changed**: a parameter that got a non-zero gradient while its group's learning rate was
  above 0 and did not move, ``confirm`` times (at the end of the run, once), and never moved before.
* **learning rate 0**: its param group's learning rate was 0 at every scan (``confirm`` scans, or the
  whole run).
* structural findings the watcher reports itself (parameters in no optimizer, nothing trainable,
  adapters loaded frozen, replicas that differ across ranks).

A finding is *confirmed* when its evidence is complete; only confirmed findings are printed and only
they stop a run under ``--policy raise``. A confirmed finding whose evidence goes away later (a
parameter starts to move, gets a gradient) is marked cleared at that step and stays in the summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

NO_GRADIENT = "no-gradient"
ALL_ZERO = "all-zero"
NON_FINITE = "non-finite"
UNCHANGED = "never-changed"
LR_ZERO = "lr-zero"
NO_OPTIMIZER = "not-in-optimizer"
ZERO_TRAINABLE = "nothing-trainable"
FROZEN_ADAPTER = "frozen-adapter"
REPLICAS = "replicas-differ"
NO_SIGNAL = "zero-everywhere"

TITLES = {
    NO_GRADIENT: "no gradient",
    ALL_ZERO: "all-zero gradient",
    NON_FINITE: "non-finite gradient values",
    UNCHANGED: "trainable weights that never changed",
    LR_ZERO: "nothing can train: learning rate 0",
    NO_OPTIMIZER: "trainable parameters in no optimizer param group",
    ZERO_TRAINABLE: "no trainable parameter",
    FROZEN_ADAPTER: "adapter weights loaded frozen",
    REPLICAS: "model replicas differ across ranks",
    NO_SIGNAL: "the gradient was zero everywhere at every step",
}

CAUSES = {
    NO_GRADIENT: "the loss does not reach them: reentrant gradient checkpointing with inputs that do not require "
                 "grad (call model.enable_input_require_grads() or use use_reentrant=False), a module the forward "
                 "never calls, or a torch.no_grad()/detach() on the way",
    ALL_ZERO: "their gradient is exactly zero and no zero partner explains it: a zero scaling (lora_alpha=0?), "
              "both factors of an adapter at zero, or an output multiplied by zero before the loss",
    NON_FINITE: "NaN/Inf reached the optimizer: fp16 overflow without a GradScaler, a NaN loss, or a division by zero; "
                "the weights are no longer finite",
    LR_ZERO: "the learning rate was 0 at every optimizer step: a warmup longer than the run, learning_rate=0, or a "
             "scheduler stepped before training",
    NO_OPTIMIZER: "the optimizer was built before these parameters became trainable (e.g. before get_peft_model), or "
                  "from a list that leaves them out: build it from model.parameters() after wrapping",
    ZERO_TRAINABLE: "every parameter has requires_grad=False: the optimizer steps but nothing can change",
    FROZEN_ADAPTER: "LoRA weights are present but none is trainable while other weights train: "
                    "PeftModel.from_pretrained(..., is_trainable=True) was probably not used",
    REPLICAS: "torch.distributed is initialised but the ranks hold different weights: the model is not wrapped in "
              "DistributedDataParallel (or its gradients are not all-reduced), so every rank trains its own copy",
    NO_SIGNAL: "every trainable gradient was exactly zero at every step, so nothing trained: adapters whose "
               "scaling is 0 (lora_alpha=0), a loss that does not depend on the trainable weights, or zero advantage "
               "in every RL batch",
}


def cause(kind: str, dtypes: set[str]) -> str:
    return unchanged_cause(dtypes) if kind == UNCHANGED else CAUSES.get(kind, "")



def unchanged_cause(dtypes: set[str]) -> str:
    low = sorted(d for d in dtypes if d in ("bfloat16", "float16"))
    if low:
        return (f"their updates are below the resolution of {', '.join(low)} weights and round away: keep float32 "
                "master weights (load in float32 and train with bf16/fp16 autocast) or raise the learning rate")
    return ("the optimizer step does not move them although they get gradients and a learning rate above 0: updates "
            "below float32 resolution (tiny lr x gradient), or an optimizer that skips them")


@dataclass
class ParamState:
    name: str
    dtype: str
    scans: int = 0
    ever_grad: bool = False
    ever_signal: bool = False
    none_streak: int = 0
    none_since: int | None = None
    zero_streak: int = 0
    zero_since: int | None = None
    counted: int = 0
    lr_seen: int = 0
    lr_pos: bool = False
    lr_since: int | None = None
    moved: bool = False
    stuck: int = 0
    stuck_since: int | None = None
    pending: tuple | None = None
    pending_step: int | None = None
    nonfinite_since: int | None = None


@dataclass
class Entry:
    since: int | None
    confirmed_at: int | str
    cleared_at: int | None = None


@dataclass
class Tracker:
    confirm: int = 3
    lost: int = 10
    params: dict[str, ParamState] = field(default_factory=dict)
    # kind -> name -> Entry: every finding ever confirmed, with its state now
    findings: dict[str, dict[str, Entry]] = field(default_factory=dict)
    structural: dict[str, dict[str, int | None]] = field(default_factory=dict)  # kind -> name -> step seen
    scans: int = 0
    zero_steps: list[int] = field(default_factory=list)
    last_step: int | None = None

    def observe(self, step: int, records, lrs: dict[str, float | None], explained: set[str],
                fingerprint: Callable[[list[str]], dict[str, tuple]]) -> None:
        """Take one scan's evidence. ``records``: ParamRecords of the gradients; ``lrs``: learning rate of the
        param group of every parameter in an optimizer; ``fingerprint(names)``: value fingerprints now."""
        self.scans += 1
        self.last_step = step
        with_grad = [r for r in records if not r.none]
        everywhere_zero = bool(with_grad) and all(r.all_zero for r in with_grad)
        if everywhere_zero:
            self.zero_steps.append(step)
        signal_now = []
        for r in records:
            s = self.params.get(r.name)
            if s is None:
                s = self.params[r.name] = ParamState(r.name, r.dtype)
            s.scans += 1
            if r.none:
                s.none_streak += 1
                s.none_since = s.none_since if s.none_since is not None else step
            else:
                s.ever_grad = True
                s.none_streak, s.none_since = 0, None
                if r.nonfinite:
                    s.nonfinite_since = s.nonfinite_since if s.nonfinite_since is not None else step
                elif r.all_zero:
                    if r.name not in explained and not everywhere_zero:
                        s.counted += 1
                        s.zero_streak += 1
                        s.zero_since = s.zero_since if s.zero_since is not None else step
                else:
                    s.counted += 1
                    s.ever_signal = True
                    s.zero_streak, s.zero_since = 0, None
            if r.name in lrs:
                lr = lrs[r.name]  # None: the optimizer picks its own step size (taken as above 0)
                if lr is not None:
                    s.lr_seen += 1
                    s.lr_since = s.lr_since if s.lr_since is not None else step
                if lr is None or lr > 0:
                    s.lr_pos = True
                if not r.none and not r.nonfinite and not r.all_zero and (lr is None or lr > 0) and not s.moved:
                    signal_now.append(r.name)
        # Did the parameters updated at the last scan move? One fingerprint pass serves that comparison and
        # the baseline for this step's updates; parameters already seen moving are never fingerprinted again.
        waiting = [n for n, s in self.params.items() if s.pending is not None]
        need = list(dict.fromkeys(waiting + signal_now))
        now = fingerprint(need) if need else {}
        self._compare(waiting, now, step)
        for n in signal_now:
            s = self.params[n]
            if not s.moved and n in now:
                s.pending, s.pending_step = now[n], step

    def skipped(self, step: int) -> None:
        """The optimizer step that the last scan preceded did not happen (a GradScaler found Inf/NaN and
        skipped it): its non-finite gradients reached no weight, and no update is to be looked for."""
        for s in self.params.values():
            if s.nonfinite_since == step:
                s.nonfinite_since = None
            if s.pending_step == step:
                s.pending, s.pending_step = None, None

    def finish(self, fingerprint: Callable[[list[str]], dict[str, tuple]] | None) -> None:
        """After the last optimizer step: did the last updates move anything?"""
        waiting = [n for n, s in self.params.items() if s.pending is not None]
        now = fingerprint(waiting) if (fingerprint and waiting) else {}
        self._compare(waiting, now, self.last_step)

    def _compare(self, waiting: list[str], now: dict[str, tuple], step) -> None:
        """Parameters updated since their fingerprint was taken: did they move? (No fingerprint now: the
        tensor is gone, nothing is concluded.)"""
        for n in waiting:
            s = self.params[n]
            if n in now:
                if now[n] != s.pending:
                    s.moved, s.stuck, s.stuck_since = True, 0, None
                else:
                    s.stuck += 1
                    s.stuck_since = s.stuck_since if s.stuck_since is not None else step
            s.pending = None

    def note(self, kind: str, names: list[str], step: int | None) -> None:
        """A structural finding the watcher established itself (replaces what was noted before)."""
        old = self.structural.get(kind, {})
        self.structural[kind] = {n: old.get(n, step) for n in names}

    # -- verdicts
    def _active(self, final: bool) -> dict[str, dict[str, int | None]]:
        c, lost = self.confirm, max(self.lost, self.confirm)
        act: dict[str, dict[str, int | None]] = {k: {} for k in TITLES}
        for n, s in self.params.items():
            if (not s.ever_grad and (s.none_streak >= c or (final and s.scans))) or \
                    (s.ever_grad and s.none_streak >= lost):
                act[NO_GRADIENT][n] = s.none_since
            if s.ever_grad and ((not s.ever_signal and (s.zero_streak >= c or (final and s.counted)))
                                or (s.ever_signal and s.zero_streak >= lost)):
                act[ALL_ZERO][n] = s.zero_since
            if s.nonfinite_since is not None:
                act[NON_FINITE][n] = s.nonfinite_since
            if not s.moved and (s.stuck >= c or (final and s.stuck)):
                act[UNCHANGED][n] = s.stuck_since
            if s.lr_seen and not s.lr_pos and (s.lr_seen >= c or final):
                act[LR_ZERO][n] = s.lr_since
        for kind, names in self.structural.items():
            act[kind].update(names)
        if final and self.scans and len(self.zero_steps) == self.scans:
            act[NO_SIGNAL]["(every parameter)"] = self.zero_steps[0]
        # A parameter in no optimizer cannot be "lr 0" or "never changed" for the same reason: say it once.
        for n in act[NO_OPTIMIZER]:
            act[UNCHANGED].pop(n, None)
        return act

    def evaluate(self, step: int | str, final: bool = False) -> list[tuple[str, list[str]]]:
        """Update the findings; returns the (kind, names) confirmed at this evaluation."""
        new: list[tuple[str, list[str]]] = []
        active = self._active(final)
        for kind, names in active.items():
            known = self.findings.setdefault(kind, {})
            fresh = []
            for n, since in names.items():
                e = known.get(n)
                if e is None:
                    known[n] = Entry(since, step)
                    fresh.append(n)
                elif e.cleared_at is not None:
                    e.cleared_at = None
                    e.confirmed_at = step
                    fresh.append(n)
            for n, e in known.items():
                if n not in names and e.cleared_at is None:
                    if final:
                        e.cleared_at = self.last_step
                    else:
                        assert not isinstance(step, str), "a named step (\"end\") is only ever the final evaluation"
                        e.cleared_at = step
            if fresh:
                new.append((kind, fresh))
        return new

    def report(self) -> list[dict]:
        out = []
        for kind in TITLES:
            known = self.findings.get(kind, {})
            for cleared in (False, True):
                names = [n for n, e in known.items() if (e.cleared_at is not None) == cleared]
                if not names:
                    continue
                entries = [known[n] for n in names]
                since = [e.since for e in entries if isinstance(e.since, int)]
                confirmed = [e.confirmed_at for e in entries]
                why = cause(kind, {self.params[n].dtype for n in names if n in self.params})
                out.append({
                    "kind": kind, "title": TITLES[kind], "cause": why, "count": len(names), "names": names,
                    "since_step": min(since) if since else None,
                    "confirmed_at": _first(confirmed),
                    "status": "cleared" if cleared else "open",
                    "cleared_at": max(e.cleared_at for e in entries if e.cleared_at is not None) if cleared else None,
                })
        return out


def _first(values: list):
    ints = [v for v in values if isinstance(v, int)]
    return min(ints) if ints else (values[0] if values else None)


def median(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


_INT_OF_SIZE: dict[int, Any] = {}


def checksums(pairs) -> dict[str, tuple]:
    """{name: (checksum,)}: the wrapping int64 sum of every element's bit pattern, one reduction per tensor
    and one device-to-host copy per device."""
    import torch
    if not _INT_OF_SIZE:
        _INT_OF_SIZE.update({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64})
    by_device: dict = {}
    for name, t in pairs:
        t = t.detach()
        if t.is_complex():
            t = torch.view_as_real(t)
        t = t.contiguous().reshape(-1)
        bits = t.view(_INT_OF_SIZE[t.element_size()]) if t.numel() else t.new_zeros(1, dtype=torch.int64)
        by_device.setdefault(bits.device, []).append((name, bits.sum(dtype=torch.int64)))
    out = {}
    for items in by_device.values():
        values = torch.stack([v for _, v in items]).tolist()
        out.update({n: (v,) for (n, _), v in zip(items, values)})
    return out


def group_lrs(optimizer, names: dict[int, str]) -> dict[str, float | None]:
    """{name: learning rate of its param group} for the parameters in ``names`` (id -> name). None: the
    optimizer sets its own step size (Adafactor's relative_step)."""
    import torch
    out: dict[str, float | None] = {}
    for g in optimizer.param_groups:
        lr = g.get("lr")
        lr = float(lr.item() if isinstance(lr, torch.Tensor) else lr) if lr is not None else None
        out.update({names[id(p)]: lr for p in g["params"] if id(p) in names})
    return out
