"""get_peft_model() then PeftModel.from_pretrained() on the result: the trained adapter has no effect.

The report: a script that first wraps the base model with get_peft_model (as for training) and then
loads the trained adapter with PeftModel.from_pretrained onto that PeftModel gets outputs identical to
the base model's, so fine-tuning appears to have done nothing. This case measures exactly that (the
logits equal the base model's to the bit, with an adapter whose lora_B is not zero); loading with
PeftModel.from_pretrained on the plain base model applies the adapter.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="get-peft-model-then-from-pretrained",
    title="get_peft_model() before PeftModel.from_pretrained(): outputs identical to the base model",
    references=["huggingface/peft#2115"],
    family="save-load-merge",
    tags=["lora", "peft", "resume", "silent"],
    affected={},  # reported on peft 0.11.1; seen on peft 0.21.2 here
    symptom=Symptom(
        description="the model with the trained adapter loaded gives exactly the base model's logits",
        observed="same_as_base",
    ),
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


def _outputs(ctx, model):
    import torch

    batch = ctx.batch(model, task="none")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _load(ctx, wrap_first):
    import torch
    from peft import PeftModel, get_peft_model

    path = _saved_adapter(ctx)
    base_logits = _outputs(ctx, ctx.causal_model())
    model = ctx.causal_model()
    if wrap_first:
        model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    model = PeftModel.from_pretrained(model, path)
    return ctx.observed(same_as_base=bool(torch.equal(_outputs(ctx, model), base_logits)))


@case.trigger
def trigger(ctx):
    return _load(ctx, wrap_first=True)


@case.fix("PeftModel.from_pretrained(base_model, path) on the plain base model")
def load_on_base(ctx):
    return _load(ctx, wrap_first=False)
