"""torch warns about use_reentrant on every checkpointed step.

torch.utils.checkpoint warns when use_reentrant is not passed. transformers 4.35-4.37 pass no
checkpointing kwargs by default ({}), older releases call checkpoint themselves without it; from 4.38
transformers passes use_reentrant explicitly. Passing gradient_checkpointing_kwargs={} is not the same
as passing nothing: it skips transformers' default and brings the warning back on every release.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="torch-use-reentrant-warning",
    title="torch.utils.checkpoint: the use_reentrant parameter should be passed explicitly (every step)",
    references=["huggingface/transformers#28536", "huggingface/transformers#29638"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "warning"],
    affected={"transformers": "<4.38"},
    symptom=Symptom(
        description="UserWarning from torch.utils.checkpoint asking for use_reentrant to be passed explicitly",
        warning=r"use_reentrant parameter should be passed explicitly|pass in use_reentrant",
    ),
    supports_model=True,
    fixed_in="transformers 4.38 (passes use_reentrant=True explicitly)",
)


def _train(ctx, **enable):
    model = ctx.causal_model()
    model.config.use_cache = False
    model.gradient_checkpointing_enable(**enable)
    return ctx.train(model)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("gradient_checkpointing_kwargs={'use_reentrant': False}", applies={"transformers": ">=4.35"})
def explicit_non_reentrant(ctx):
    return _train(ctx, gradient_checkpointing_kwargs={"use_reentrant": False})


@case.fix("gradient_checkpointing_kwargs={} (circulated: 'pass the kwargs')", works=False,
          applies={"transformers": ">=4.35"},
          note="an empty dict skips transformers' default and falls back to torch's, which warns")
def empty_kwargs(ctx):
    return _train(ctx, gradient_checkpointing_kwargs={})
