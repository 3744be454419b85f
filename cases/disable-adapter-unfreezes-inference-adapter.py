"""An adapter loaded for inference becomes trainable after `with model.disable_adapter():`.

PeftModel.from_pretrained loads the adapter frozen (inference mode). Leaving the disable_adapter()
context (as code does that compares against the base model, e.g. to get reference log-probabilities)
re-enables the adapter layers with requires_grad=True, silently: the model that was loaded for
evaluation or as a frozen reference now has trainable LoRA weights that an optimizer built afterwards,
or a trainer, will update. peft's maintainers confirmed it and deferred the fix as backwards
incompatible (peft#3447); enable_adapter_layers() does the same.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="disable-adapter-unfreezes-inference-adapter",
    title="with model.disable_adapter(): an adapter loaded with is_trainable=False comes back trainable",
    references=["huggingface/peft#3447"],
    family="save-load-merge",
    tags=["lora", "peft", "inference", "silent"],
    affected={},  # peft 0.9.0 to 0.21.2 in the matrix; the maintainers deferred the fix to a breaking release
    symptom=Symptom(description="LoRA weights requires_grad=False after loading, True after the disable_adapter() "
                                "context", observed="unfrozen"),
    supports_model=True,
)


def _load(ctx, refreeze=False):
    import os

    import torch
    from peft import PeftModel, get_peft_model

    path = os.path.join(ctx.workdir, "adapter")
    if not os.path.exists(path):
        base = ctx.causal_model()
        get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM")).save_pretrained(path)
    model = PeftModel.from_pretrained(ctx.causal_model(), path)

    def trainable():
        return sum(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)

    before = trainable()
    with torch.no_grad(), model.disable_adapter():  # e.g. reference logits from the base model
        model(**ctx.batch(model, task="none"))
    if refreeze:
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)
    after = trainable()
    return ctx.observed(unfrozen=before == 0 and after > 0, trainable_before=before, trainable_after=after)


@case.trigger
def trigger(ctx):
    return _load(ctx)


@case.fix("freeze the adapter again after the context (requires_grad_(False) on the lora_ weights)")
def refreeze(ctx):
    return _load(ctx, refreeze=True)
