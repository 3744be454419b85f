"""get_peft_model(base, config) used to "load" a trained adapter: a fresh adapter, outputs equal the base model's.

get_peft_model creates new adapter weights (lora_B initialised to zero); it never reads a saved adapter.
A script that rebuilds the LoRA config and calls get_peft_model to evaluate or continue a fine-tuned
adapter gets the base model's outputs, as if training had done nothing. PeftModel.from_pretrained loads
the saved weights.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="get-peft-model-to-load-adapter",
    title="get_peft_model() instead of PeftModel.from_pretrained() to load an adapter: the model is the base model",
    references=["huggingface/peft#793"],
    family="save-load-merge",
    tags=["lora", "peft", "resume", "silent"],
    affected={},
    symptom=Symptom(description="the 'loaded' model gives exactly the base model's logits; the saved adapter is unused",
                    observed="same_as_base"),
    supports_model=True,
)


def _saved_adapter(ctx) -> str:
    import os

    import torch
    from peft import get_peft_model

    path = os.path.join(ctx.workdir, "adapter")
    if not os.path.exists(path):
        base = ctx.causal_model()
        model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
        with torch.no_grad():  # a trained adapter: lora_B no longer zero
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        model.save_pretrained(path)
    return path


def _logits(ctx, model):
    import torch

    model.eval()
    with torch.no_grad():
        return model(**ctx.batch(model, task="none")).logits


def _load(ctx, from_pretrained):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    path = _saved_adapter(ctx)
    base_logits = _logits(ctx, ctx.causal_model())
    model = ctx.causal_model()
    if from_pretrained:
        model = PeftModel.from_pretrained(model, path)
    else:  # the config read back from the adapter folder, the weights never
        model = get_peft_model(model, LoraConfig.from_pretrained(path))
    return ctx.observed(same_as_base=bool(torch.equal(_logits(ctx, model), base_logits)))


@case.trigger
def trigger(ctx):
    return _load(ctx, from_pretrained=False)


@case.fix("PeftModel.from_pretrained(base_model, path)")
def from_pretrained(ctx):
    return _load(ctx, from_pretrained=True)
