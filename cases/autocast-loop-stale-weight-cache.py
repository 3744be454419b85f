"""The whole training loop inside one torch.autocast context: the forward keeps using stale weight casts.

Under autocast a Linear casts its float32 weight to bfloat16/float16, and with cache_enabled=True (the
default) the cast of a leaf parameter that requires grad is cached until the outermost autocast context
exits. A loop written as `with torch.autocast(...): for batch in data: forward; backward; step` never
exits it, so after optimizer.step() has changed the float32 weights every later forward still
multiplies by the low-precision copy made at the first step: the matrices of every Linear layer are
frozen in the forward while their gradients (computed at those stale values) keep updating the float32
weights. Nothing fails; the loss falls much more slowly or goes flat, and the model evaluated outside
the context is not the one the logged losses describe. The AMP recipe wraps only the forward (and the
loss) in autocast; cache_enabled=False also avoids the stale casts.
The case trains 3 AdamW steps inside one open bfloat16 autocast context (the forward itself under
autocast as usual) and then compares the loss computed inside that context with the same forward in a
fresh one.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="autocast-loop-stale-weight-cache",
    title="Training loop wrapped in one torch.autocast block: the forward reuses the first step's weight casts",
    references=["X-GenGroup/Flow-Factory#186", "pytorch/pytorch#120376"],
    family="mixed-precision",
    tags=["mixed-precision", "bf16", "autocast", "custom-loop", "silent"],
    affected={},  # torch's autocast weight cache lives until the outermost context exits
    symptom=Symptom(
        description="after the optimizer steps, the loss computed inside the still-open autocast context differs "
                    "from the same forward in a fresh context: the Linear layers still use the first step's casts",
        observed="stale_weight_casts",
    ),
)


def _train(ctx, wrap_loop=True, cache_enabled=True):
    import contextlib

    import torch

    model = ctx.causal_model()
    batch = ctx.batch(model)
    outer = (torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache_enabled) if wrap_loop
             else contextlib.nullcontext())
    with outer:  # the reported loop: forward, backward and optimizer.step() all inside one autocast block
        result = ctx.train(model, batch=batch, autocast_dtype=torch.bfloat16, lr=1e-3, steps=3)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the next step's forward, as the loop runs it
            in_loop = float(model(**batch).loss.detach())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fresh = float(model(**batch).loss.detach())  # the current weights, cast anew
    result.extra.update(loss_inside_loop_context=in_loop, loss_fresh_context=fresh)
    result.extra["stale_weight_casts"] = abs(in_loop - fresh) > 1e-3 * max(1.0, abs(fresh))
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("wrap only the forward and the loss in torch.autocast (backward and optimizer.step outside it)")
def forward_only(ctx):
    return _train(ctx, wrap_loop=False)


@case.fix("torch.autocast(..., cache_enabled=False) around the loop")
def no_cache(ctx):
    return _train(ctx, cache_enabled=False)
