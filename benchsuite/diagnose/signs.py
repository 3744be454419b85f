"""The signs a training log shows, named once: case files declare them (``Case(signs=[...])``), ``doctor
--log`` reads them from a log, and both meet here. Adding a case that declares a sign extends the diagnosis
without code.
"""
from __future__ import annotations

import math

LOG2 = math.log(2.0)

# name -> what it means, as the user reads it in doctor's answer
SIGNS = {
    "loss-nonfinite": "the loss is NaN or infinite",
    "loss-zero": "the logged loss is exactly 0 (the Trainer also logs 0.0 in place of a first NaN loss)",
    "loss-flat": "the loss does not move: the same value at every logged step",
    "loss-log2": "the loss stays at log 2 = 0.6931 (a pairwise/preference loss that cannot tell chosen from "
                 "rejected)",
    "loss-diverging": "the loss grows (more than 10x) while staying finite",
    "grad-norm-zero": "grad_norm is exactly 0",
    "grad-norm-nonfinite": "grad_norm is NaN or infinite",
    "lr-zero": "the learning rate is 0 (or below 1e-7) at every logged step",
    "no-eval-loss": "evaluation ran but logged no eval_loss",
    "steps-skipped": "optimizer steps were skipped (loss-scale overflow; the scheduler stepped before the "
                     "optimizer)",
}

# Messages in a console log that show a sign by themselves.
TEXT_SIGNS = (
    ("steps-skipped", r"Detected call of `?lr_scheduler\.step\(\)`? before `?optimizer\.step\(\)`?"),
    ("steps-skipped", r"[Oo]verflow.{0,40}[Ss]kipping step|OVERFLOW! .*[Ss]kipping step"),
)


def check(names, where: str) -> list[str]:
    """``names`` as a list of known signs, or ValueError naming the unknown ones and the vocabulary."""
    names = [names] if isinstance(names, str) else list(names or [])
    unknown = [n for n in names if n not in SIGNS]
    if unknown:
        raise ValueError(f"{where}: unknown sign(s) {', '.join(map(repr, unknown))} (one of {', '.join(SIGNS)})")
    return names


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _loss_signs(losses: list[float], found: dict[str, str]) -> None:
    if not losses:
        return
    bad = [v for v in losses if not math.isfinite(v)]
    if bad:
        found["loss-nonfinite"] = f"{len(bad)} of {len(losses)} logged loss(es) non-finite ({bad[0]})"
    zeros = [v for v in losses if v == 0.0]
    if zeros:
        found["loss-zero"] = f"{len(zeros)} of {len(losses)} logged loss(es) exactly 0"
    fin = _finite(losses)
    if len(fin) >= 3 and max(fin) - min(fin) < 5e-5 and fin[0] != 0.0:
        found["loss-flat"] = f"the loss is {fin[0]:.4f} at all {len(fin)} logged steps"
    if len(fin) >= 2 and all(abs(v - LOG2) < 1e-3 for v in fin):
        found["loss-log2"] = f"the loss is {fin[0]:.4f} (log 2 = 0.6931) at all {len(fin)} logged steps"
    if len(fin) >= 3 and fin[0] > 0 and max(fin[1:]) > 10 * fin[0] and max(fin[1:]) - fin[0] > 1.0:
        found["loss-diverging"] = f"the loss went from {fin[0]:.4g} to {max(fin[1:]):.4g}"


def from_records(records: list[dict]) -> dict[str, str]:
    """{sign: evidence} for a Trainer's log history (``trainer_state.json``'s ``log_history``, or the dicts a
    console log printed): training records carry ``loss``, evaluation records ``eval_*`` keys."""
    found: dict[str, str] = {}
    train = [r for r in records if "loss" in r]
    losses = [float(r["loss"]) for r in train if _number(r["loss"])]
    _loss_signs(losses, found)
    norms = [float(r["grad_norm"]) for r in records if "grad_norm" in r and _number(r["grad_norm"])]
    if norms and any(not math.isfinite(v) for v in norms):
        found["grad-norm-nonfinite"] = f"grad_norm non-finite at {sum(not math.isfinite(v) for v in norms)} " \
                                       f"of {len(norms)} logged step(s)"
    if norms and all(v == 0.0 for v in norms):
        found["grad-norm-zero"] = f"grad_norm 0 at all {len(norms)} logged step(s)"
    lrs = [float(r["learning_rate"]) for r in records if "learning_rate" in r and _number(r["learning_rate"])]
    if lrs and all(abs(v) < 1e-7 for v in lrs):
        found["lr-zero"] = f"learning rate at most {max(lrs):.3g} at all {len(lrs)} logged step(s)"
    eval_losses = [float(r["eval_loss"]) for r in records if "eval_loss" in r and _number(r["eval_loss"])]
    bad_eval = [v for v in eval_losses if not math.isfinite(v)]
    if bad_eval and "loss-nonfinite" not in found:
        found["loss-nonfinite"] = f"{len(bad_eval)} of {len(eval_losses)} eval_loss value(s) non-finite ({bad_eval[0]})"
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    if evals and not any("eval_loss" in r for r in evals):
        keys = sorted({k for r in evals for k in r if k.startswith("eval_")})
        found["no-eval-loss"] = f"{len(evals)} evaluation record(s) with {', '.join(keys[:5])} and no eval_loss"
    return found


def _number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
