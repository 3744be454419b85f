"""transformers 5 checkpoints non-reentrantly by default.

From 5.0 gradient_checkpointing_enable() passes use_reentrant=False (4.38-4.57 passed True) and
installs the input-grad hook for every model: memory use and the set of failures change after an
upgrade (the reentrant-only failures disappear; non-reentrant ones such as ZeRO-3 metadata checks
appear). The case observes which variant a default call configures.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="transformers-v5-nonreentrant-default",
    title="transformers 5.x: gradient_checkpointing_enable() defaults to non-reentrant checkpointing",
    references=["huggingface/transformers#43203", "huggingface/trl#4811"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "upgrade", "behaviour-change"],
    affected={"transformers": ">=5"},
    symptom=Symptom(
        description="a default gradient_checkpointing_enable() configures torch.utils.checkpoint with use_reentrant=False",
        observed="non_reentrant_configured",
    ),
    supports_model=True,
)


def _checkpoint_kwargs(model) -> dict:
    for m in model.modules():
        fn = getattr(m, "_gradient_checkpointing_func", None)
        if fn is not None:
            return dict(getattr(fn, "keywords", {}) or {})
    return {}


def _train(ctx, **enable):
    model = ctx.causal_model()
    model.config.use_cache = False
    model.gradient_checkpointing_enable(**enable)
    kwargs = _checkpoint_kwargs(model)
    result = ctx.train(model)
    result.extra["checkpoint_kwargs"] = {k: str(v) for k, v in kwargs.items()}
    result.extra["non_reentrant_configured"] = kwargs.get("use_reentrant") is False
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("keep the 4.x behaviour: gradient_checkpointing_kwargs={'use_reentrant': True}",
          applies={"transformers": ">=4.35"})
def explicit_reentrant(ctx):
    return _train(ctx, gradient_checkpointing_kwargs={"use_reentrant": True})
