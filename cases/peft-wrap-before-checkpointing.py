"""get_peft_model first, then TrainingArguments(gradient_checkpointing=True): the order loses the input hook.

PeftModel.__init__ installs the input-grad hook only if gradient checkpointing is already on when the
model is wrapped. Wrap first and let the Trainer switch checkpointing on (reentrant by default in
transformers 4.x), and nothing makes the embedding output require grad: the run dies at backward
(every trainable weight is inside the checkpointed blocks). TRL's trainers install the hook
themselves, which is why the same script "works with SFTTrainer".
"""
from benchsuite.case import Case, Explains, Symptom

case = Case(
    id="peft-wrap-before-checkpointing",
    title="get_peft_model before Trainer's gradient_checkpointing=True: no input-grad hook, backward fails",
    references=["huggingface/transformers#26334", "huggingface/transformers#42489", "huggingface/transformers#25841"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "lora", "trainer", "crash"],
    affected={"transformers": "<5"},
    symptom=Symptom(
        description="Trainer with gradient_checkpointing=True on a model wrapped by get_peft_model beforehand: "
                    "'None of the inputs have requires_grad=True', then RuntimeError ... does not require grad",
        exception="RuntimeError",
        message=r"does not require grad",
        warning=r"None of the inputs have requires_grad=True",
    ),
    # With a trainable head (a reward model, modules_to_save) the backward does not fail: the LoRA weights
    # silently get no gradient instead (the same missing hook; see reentrant-checkpoint-frozen-inputs).
    explains=[Explains("no-gradient", params=r"lora_", context={"trainer": True},
                       note="Trainer(gradient_checkpointing=True) on a get_peft_model model whose head trains")],
    supports_model=True,
    fixed_in="transformers 5.0 (the hook is installed by gradient_checkpointing_enable itself)",
)


def _lora(ctx, model):
    from peft import get_peft_model

    return get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))


@case.trigger
def trigger(ctx):
    model = _lora(ctx, ctx.causal_model())
    return ctx.trainer_train(model, gradient_checkpointing=True)


@case.fix("enable checkpointing on the base model before get_peft_model (peft then installs the hook)")
def checkpointing_before_wrap(ctx):
    base = ctx.causal_model()
    base.gradient_checkpointing_enable()
    model = _lora(ctx, base)
    return ctx.trainer_train(model, gradient_checkpointing=True)


@case.fix("model.enable_input_require_grads() before the Trainer")
def enable_input_require_grads(ctx):
    model = _lora(ctx, ctx.causal_model())
    model.enable_input_require_grads()
    return ctx.trainer_train(model, gradient_checkpointing=True)
