"""`model.merge_and_unload()` without assigning its result, then `model.save_pretrained()`: an empty adapter.

merge_and_unload merges the LoRA weights into the base layers and returns the plain transformers model;
the PeftModel the script still holds now wraps a model without LoRA layers. Its save_pretrained writes
what a PeftModel always writes, an adapter: adapter_config.json and an adapter_model.safetensors with
no tensor in it, not the merged model (peft#2032: "the emptiness in adapter.safetensors is saved").
Loading that folder onto the base model gives the base model back, silently; the trained update exists
only in the discarded return value.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="merge-unassigned-saves-empty-adapter",
    title="model.merge_and_unload() not assigned, then model.save_pretrained(): adapter_model.safetensors is empty",
    references=["huggingface/peft#2032", "huggingface/peft#868"],
    family="save-load-merge",
    tags=["lora", "peft", "merge", "save", "silent"],
    affected={},
    symptom=Symptom(description="the folder holds an adapter with no tensor; loading it gives the base model, not the "
                                "trained one", observed="training_lost"),
)


def _run(ctx, assign=False, save_adapter_first=False):
    import os

    import torch
    from peft import PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = ctx.text_model()
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
    result = ctx.train(model)
    batch = ctx.batch(model, task="none")
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    out = os.path.join(ctx.workdir, f"final-{os.getpid()}")
    if save_adapter_first:
        model.save_pretrained(out)
        model.merge_and_unload()
    elif assign:
        merged = model.merge_and_unload()
        merged.save_pretrained(out)
    else:  # as reported
        model.merge_and_unload()
        model.save_pretrained(out)
    adapter_file = os.path.join(out, "adapter_model.safetensors")
    if os.path.exists(adapter_file):  # load the folder the way its files say
        saved = len(load_file(adapter_file))
        reloaded = PeftModel.from_pretrained(ctx.text_model(), out)
    else:
        saved = None
        reloaded = AutoModelForCausalLM.from_pretrained(out)
    reloaded.eval()
    with torch.no_grad():
        diff = (reloaded(**batch).logits - trained).abs().max().item()
    result.extra.update(training_lost=diff > 1e-3, max_logit_diff=diff, adapter_tensors_saved=saved,
                        files=sorted(os.listdir(out)))
    return result


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("merged = model.merge_and_unload(); merged.save_pretrained(out)")
def assign(ctx):
    return _run(ctx, assign=True)


@case.fix("model.save_pretrained(out) before merge_and_unload (keep the adapter)")
def save_first(ctx):
    return _run(ctx, save_adapter_first=True)
