"""A merged model saved into the folder that holds its adapter: from_pretrained applies the adapter a second time.

The usual script trains, saves the adapter to output_dir (trainer.save_model / save_pretrained), then
merges and saves the merged model to the same output_dir. from_pretrained on that folder finds
adapter_config.json and attaches the adapter (the transformers PEFT integration, peft#1381). Since
transformers 5.4.0 (PR #43781) a local folder that also has a config.json is taken as "a full model
with an embedded adapter": the merged weights are loaded and the adapter is added on top of them, so
its update counts twice and the reloaded model is not the merged one. Releases up to 5.3.0 loaded the
base named in adapter_config.json instead and ignored the merged weights. Nothing warns in either case.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="merged-saved-next-to-adapter",
    title="merged model saved next to adapter_config.json: AutoModelForCausalLM.from_pretrained re-applies the "
          "adapter on top of the merged weights",
    references=["huggingface/peft#1381", "huggingface/transformers#43781", "huggingface/transformers#43746"],
    family="save-load-merge",
    tags=["lora", "peft", "merge", "transformers-peft-integration", "silent"],
    affected={"transformers": ">=5.4.0"},  # bisected: not-reproduced at transformers 5.3.0, reproduced from 5.4.0 (benchsuite bisect --write)
    symptom=Symptom(description="the model reloaded from the folder gives other logits than the merged model that was "
                                "saved there (the adapter's update is applied twice)", observed="reload_differs"),
)


def _run(ctx, merged_dir="output", remove_adapter_files=False, **save_kwargs):
    import os

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = os.path.join(ctx.workdir, "base")
    if not os.path.exists(os.path.join(base_dir, "config.json")):
        ctx.text_model().save_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
    result = ctx.train(model)
    output_dir = os.path.join(ctx.workdir, f"output-{os.getpid()}")
    model.save_pretrained(output_dir)  # the adapter, as trainer.save_model(output_dir) writes it
    merged = model.merge_and_unload()
    target = output_dir if merged_dir == "output" else output_dir + "-merged"
    merged.save_pretrained(target, **save_kwargs)
    if remove_adapter_files:
        for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
            if os.path.exists(os.path.join(target, name)):
                os.remove(os.path.join(target, name))
    batch = ctx.batch(merged, task="none")
    merged.eval()
    reloaded = AutoModelForCausalLM.from_pretrained(target).eval()
    with torch.no_grad():
        diff = (merged(**batch).logits - reloaded(**batch).logits).abs().max().item()
    result.extra.update(reload_differs=diff > 1e-3, max_logit_diff=diff,
                        adapter_attached=bool(getattr(reloaded, "_hf_peft_config_loaded", False)))
    return result


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("save the merged model to its own folder (output_dir + '-merged')")
def own_folder(ctx):
    return _run(ctx, merged_dir="own")


@case.fix("delete adapter_config.json / adapter_model.safetensors from the folder after saving the merged model")
def remove_adapter(ctx):
    return _run(ctx, remove_adapter_files=True)


@case.fix("merged.save_pretrained(output_dir, save_peft_format=False)", works=False,
          note="only changes how an attached adapter is written; the adapter files already in the folder stay")
def save_peft_format(ctx):
    return _run(ctx, save_peft_format=False)
