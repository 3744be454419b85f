"""The findings watch adds to the gradient scanner's (benchsuite.gradscan.verdicts): about the loss, the learning
rate and RL steps without signal, and the signs (benchsuite.diagnose.signs) each finding shows, through which the
catalogue cases that explain it are named."""
from __future__ import annotations

from ..gradscan import verdicts as V

LOSS_NONFINITE = "loss-nonfinite"
LOSS_FLAT = "loss-flat"
LOSS_DIVERGING = "loss-diverging"
LR_TINY = "lr-tiny"
RL_FEW_SIGNAL = "rl-few-signal"

# Findings about the run (the loss, the learning rate), not about named parameters: their "names" are a label.
RUN_LEVEL = (LOSS_NONFINITE, LOSS_FLAT, LOSS_DIVERGING, LR_TINY, RL_FEW_SIGNAL, V.NO_SIGNAL)

TITLES = {
    LOSS_NONFINITE: "non-finite loss",
    LOSS_FLAT: "the loss stays exactly constant",
    LOSS_DIVERGING: "the loss diverges while the gradients stay finite",
    LR_TINY: "the weights practically do not move: the learning rate stays far below the configured one",
    RL_FEW_SIGNAL: "most RL steps carry no signal",
}

# The order in which findings confirmed at the same step are announced (the first one stops a run under raise):
# what explains the others first.
ORDER = (LOSS_NONFINITE, V.NON_FINITE, V.LR_ZERO, LR_TINY, LOSS_FLAT, LOSS_DIVERGING, V.NO_SIGNAL)

# kind -> the signs of benchsuite.diagnose.signs its evidence always shows (more are added from the evidence)
SIGNS = {
    V.NON_FINITE: ["grad-norm-nonfinite"],
    V.NO_SIGNAL: ["grad-norm-zero"],
    V.LR_ZERO: ["lr-zero"],
    LOSS_NONFINITE: ["loss-nonfinite"],
    LOSS_FLAT: ["loss-flat"],
    LOSS_DIVERGING: ["loss-diverging"],
    LR_TINY: ["lr-zero"],
    RL_FEW_SIGNAL: ["grad-norm-zero", "loss-zero"],
}

ZERO_EVERYWHERE_CAUSE = (
    "every trainable gradient was exactly zero and this is not an RL trainer, where zero advantage could explain it: "
    "the loss does not depend on the trainable weights: adapters whose scaling is 0 (lora_alpha=0), a loss "
    "multiplied by 0 (beta=0 in a KTO/DPO-style loss), every label masked (-100), or an output detached before "
    "the loss")


def title(kind: str) -> str:
    return TITLES.get(kind) or V.TITLES.get(kind, kind)
