"""Training with gradient checkpointing while the config still says use_cache=True.

The KV cache is useless in training and incompatible with recomputation; transformers switches it
off itself and logs "`use_cache=True` is incompatible with gradient checkpointing. Setting
`use_cache=False`". Scripts that load a model for generation and then train it see the message.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="use-cache-with-checkpointing",
    title="`use_cache=True` is incompatible with gradient checkpointing. Setting `use_cache=False`",
    references=["huggingface/transformers#21737", "huggingface/transformers#30301"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "warning"],
    affected={},
    symptom=Symptom(
        description="the warning, logged at the first checkpointed training forward",
        warning=r"use_cache=True.? is incompatible with gradient checkpointing",
    ),
    supports_model=True,
)


def _train(ctx, config_off=False, forward_off=False):
    model = ctx.causal_model()
    model.config.use_cache = not config_off
    model.gradient_checkpointing_enable()
    batch = ctx.batch(model)
    if forward_off:
        batch["use_cache"] = False
    return ctx.train(model, batch=batch)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("model.config.use_cache = False before training")
def config_use_cache_false(ctx):
    return _train(ctx, config_off=True)


@case.fix("pass use_cache=False to the training forward")
def forward_use_cache_false(ctx):
    return _train(ctx, forward_off=True)
