"""Causal-LM LoRA + reentrant checkpointing, no input hook: backward() raises instead of training.

When every trainable parameter sits inside the checkpointed blocks (LoRA on attention, frozen
lm_head), nothing the loss depends on requires grad once the reentrant checkpoint has dropped the
graph: after torch's "None of the inputs have requires_grad=True" warning, loss.backward() raises
"element 0 of tensors does not require grad and does not have a grad_fn". The loud sibling of
reentrant-checkpoint-frozen-inputs (there a trainable head keeps the graph alive).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="reentrant-checkpoint-no-grad-fn",
    title="Causal-LM LoRA + reentrant checkpointing: RuntimeError element 0 of tensors does not require grad",
    references=["huggingface/peft#137", "huggingface/transformers#26377", "huggingface/peft#742"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "lora", "crash"],
    affected={"transformers": "<5"},
    symptom=Symptom(
        description="UserWarning 'None of the inputs have requires_grad=True', then RuntimeError: element 0 of "
                    "tensors does not require grad and does not have a grad_fn at loss.backward()",
        exception="RuntimeError",
        message=r"element 0 of tensors does not require grad and does not have a grad_fn",
        warning=r"None of the inputs have requires_grad=True",
    ),
    supports_model=True,
    fixed_in="transformers 5.0",
)


def _train(ctx, enable_kwargs=None, input_hook=False):
    from peft import get_peft_model

    model = ctx.causal_model()
    model.config.use_cache = False
    model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    if enable_kwargs is None:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=enable_kwargs)
    if input_hook:
        model.enable_input_require_grads()
    return ctx.train(model)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("model.enable_input_require_grads()")
def enable_input_require_grads(ctx):
    return _train(ctx, input_hook=True)


@case.fix("gradient_checkpointing_kwargs={'use_reentrant': False}", applies={"transformers": ">=4.35"})
def non_reentrant(ctx):
    return _train(ctx, enable_kwargs={"use_reentrant": False})
