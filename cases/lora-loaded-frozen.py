"""A LoRA adapter loaded with PeftModel.from_pretrained is frozen: nothing trains.

PeftModel.from_pretrained defaults to is_trainable=False (inference mode), so every adapter weight
has requires_grad=False: print_trainable_parameters() says "trainable params: 0", a Trainer or an
optimizer gets an empty parameter list, or, when something else is trainable, the adapter silently
never changes. Reported by people resuming LoRA fine-tuning from a saved adapter.
"""
from benchsuite.case import Case, Explains, Symptom

case = Case(
    id="lora-loaded-frozen",
    title="PeftModel.from_pretrained without is_trainable=True: the adapter loads frozen (0 trainable params)",
    references=["huggingface/peft#282", "huggingface/trl#6700", "tloen/alpaca-lora#352"],
    family="resume",
    tags=["lora", "peft", "resume", "silent"],
    affected={},  # every peft version: is_trainable defaults to False
    symptom=Symptom(
        description="trainable params: 0 after loading the adapter; the optimizer gets an empty parameter list",
        no_trainable=True,
    ),
    supports_model=True,
    explains=[Explains("nothing-trainable", note="only the loaded adapter was meant to train"),
              Explains("frozen-adapter", note="the loaded adapter is frozen while other weights train")],
)


def _saved_adapter(ctx) -> str:
    import os

    from peft import get_peft_model

    path = os.path.join(ctx.workdir, "adapter")
    if not os.path.exists(path):
        base = ctx.causal_model()
        model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
        ctx.train(model, steps=1)  # a real adapter: lora_B no longer zero
        model.save_pretrained(path)
    return path


def _resume(ctx, **kwargs):
    from peft import PeftModel

    path = _saved_adapter(ctx)
    return PeftModel.from_pretrained(ctx.causal_model(), path, **kwargs)


@case.trigger
def trigger(ctx):
    return ctx.train(_resume(ctx))


@case.fix("PeftModel.from_pretrained(..., is_trainable=True)")
def is_trainable(ctx):
    return ctx.train(_resume(ctx, is_trainable=True))


@case.fix("set requires_grad=True on the lora_ weights after loading")
def unfreeze_lora(ctx):
    model = _resume(ctx)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
    return ctx.train(model)
