"""Gradient checkpointing does nothing while the model is in eval mode.

transformers only checkpoints "if self.gradient_checkpointing and self.training": a model left in
eval() mode (a PPO rollout that computes gradients, a custom loop that calls model.eval() before the
training forward) silently keeps every activation, and the memory users enabled checkpointing for is
never saved. Seen by the absence of any recomputation during backward().
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="eval-mode-disables-checkpointing",
    title="Gradient checkpointing silently off in eval() mode: no recompute, no memory saved",
    references=["huggingface/trl#1066", "huggingface/diffusers#9850"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "memory", "silent"],
    affected={},
    symptom=Symptom(
        description="checkpointing enabled, gradients computed in eval() mode: no module runs again during "
                    "backward(), so no activation was dropped",
        observed="no_recompute",
    ),
    supports_model=True,
)


def _train(ctx, train_mode):
    from benchsuite.checkpointing import RecomputeCounter

    model = ctx.causal_model()
    model.config.use_cache = False
    model.gradient_checkpointing_enable()
    if not train_mode:
        model.eval()
    counter = RecomputeCounter(model)

    def loss_fn(m, batch):
        loss = m(**batch).loss
        real_backward = loss.backward

        def backward(*a, **k):
            with counter.backward():
                return real_backward(*a, **k)
        loss.backward = backward
        return loss

    result = ctx.train(model, loss_fn=loss_fn, train_mode=train_mode)
    result.extra["recomputed_module_calls"] = counter.calls
    result.extra["no_recompute"] = counter.calls == 0
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx, train_mode=False)


@case.fix("model.train() before the training forward")
def train_mode(ctx):
    return _train(ctx, train_mode=True)
