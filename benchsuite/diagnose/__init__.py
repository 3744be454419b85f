"""From a symptom in hand to the catalogue cases that explain it (``benchsuite doctor --error/--log``).

``signs``: the shared vocabulary of what a training log shows (a NaN loss, a loss stuck at log 2, grad_norm
0, no eval_loss, ...), which case files declare with ``Case(signs=[...])``; ``logs``: reading a
``trainer_state.json``, a Trainer/TRL console log or a ``watch --json`` report into those signs; ``errors``:
reading a pasted traceback or warning; ``ranking``: matching both against the cases' declarations, best
first. Nothing here imports torch or runs a case.
"""
