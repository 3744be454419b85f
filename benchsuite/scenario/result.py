"""A scenario's outcome (TrainResult) and how the harness judges a fix's training (healthy_problems)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass
class TrainResult:
    """A scenario's outcome: what its training loop saw (``ctx.train``, ``ctx.trainer_train``), or, from
    ``ctx.observed(**flags)``, the facts of a scenario with nothing to train (``trains=False``)."""

    losses: list[float] = field(default_factory=list)
    reports: list = field(default_factory=list)  # benchsuite.gradscan.ScanReport per step
    trainable: list[str] = field(default_factory=list)
    changed: dict[str, bool] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    precomputed: dict | None = None  # a summary made elsewhere (another process's training loop)
    trains: bool = True  # False: ctx.observed(), an explicit outcome without training

    def summary(self) -> dict:
        if self.precomputed is not None:
            return {**self.precomputed, "extra": {**self.precomputed.get("extra", {}), **self.extra}}
        if not self.trains:
            return {"trains": False, "extra": self.extra}
        got_grad = {r.name for rep in self.reports for r in rep if not r.none}
        nonfinite = sorted({r.name for rep in self.reports for r in rep if r.nonfinite})
        # Exactly zero (never None) at every step. The scanner marks a zero that is zero by construction
        # at that step (gradscan's mark_expected_zero: a factor whose partner is still all zero, a cancelling bias);
        # a parameter so marked at every step is explained, the others are for the harness to judge.
        zero_sets = [{r.name for r in rep if r.all_zero} for rep in self.reports]
        always_zero = [n for n in self.trainable if zero_sets and all(n in z for z in zero_sets)]
        excused_sets = [{r.name for r in rep if r.all_zero and r.expected_zero} for rep in self.reports]
        by_construction = [n for n in always_zero if all(n in z for z in excused_sets)]
        return {
            "trains": True,
            "steps": len(self.losses),
            "losses": self.losses,
            "trainable_params": len(self.trainable),
            "no_grad": [n for n in self.trainable if n not in got_grad] if self.reports else [],
            "nonfinite_grads": nonfinite,
            "unchanged": [n for n, c in self.changed.items() if not c],
            "always_zero_grad": always_zero,
            "zero_by_construction": by_construction,
            "grad_problems": [p.__dict__ for p in self.reports[-1].problems] if self.reports else [],
            "extra": self.extra,
        }


# The result being filled, so an exception mid-training still reports the steps that ran.
_current_result: list[TrainResult | None] = [None]


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def healthy_problems(outcome: dict, expected_zero: str | None = None) -> list[str]:
    """Why a run is not healthy training (empty list = healthy): used to judge fixes.

    ``expected_zero``: the case's regex of parameters whose gradient is zero by construction. A trainable
    parameter whose gradient is exactly zero at every step is a problem unless the scanner marked it zero
    by construction at every step (a LoRA factor whose partner is still all zero) or it matches that regex:
    otherwise the "fix" may train nothing (LoRA with lora_alpha=0, say) and could never be told apart from
    one that works. A trainable parameter that never gets a gradient (one the model never uses) is a
    problem too: freeze it (``requires_grad_(False)``) in the scenario.
    An outcome from ``ctx.observed(...)`` has no training to judge: only an exception counts against it.
    """
    problems = []
    if outcome.get("exception"):
        e = outcome["exception"]
        problems.append(f"raised {e['type']}: {e['message'][:200]}")
        return problems
    if outcome.get("crashed"):
        return [f"crashed: {outcome['crashed']}"]
    if outcome.get("trains") is False:
        return []
    if outcome.get("steps", 0) == 0:
        return ["no training step ran"]
    if outcome.get("trainable_params", 0) == 0:
        problems.append("no trainable parameter")
    if any(not math.isfinite(x) for x in outcome.get("losses", [])):
        problems.append("non-finite loss")
    if outcome.get("no_grad"):
        problems.append(f"{len(outcome['no_grad'])} trainable parameter(s) never got a gradient: "
                        f"{_names(outcome['no_grad'])} (freeze parameters the model does not use)")
    if outcome.get("nonfinite_grads"):
        problems.append(f"{len(outcome['nonfinite_grads'])} parameter(s) with non-finite gradients: "
                        f"{_names(outcome['nonfinite_grads'])}")
    always_zero = outcome.get("always_zero_grad", [])
    explained = set(outcome.get("zero_by_construction", []))
    if expected_zero:
        explained |= {n for n in always_zero if re.search(expected_zero, n)}
    unexplained = [n for n in always_zero if n not in explained]
    if unexplained:
        steps = outcome.get("steps", 0)
        problems.append(f"{len(unexplained)} trainable parameter(s) had an exactly zero gradient at every step "
                        f"({steps} step(s)) with no explanation: {_names(unexplained)}")
    stuck = [n for n in outcome.get("unchanged", []) if n not in set(always_zero)]
    if stuck:
        problems.append(f"{len(stuck)} trainable parameter(s) never changed: {_names(stuck)}")
    return problems
