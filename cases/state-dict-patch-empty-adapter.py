"""alpaca-lora's `model.state_dict = get_peft_model_state_dict(...)` patch: save_pretrained writes an empty adapter.

alpaca-lora's finetune.py (and scripts copied from it, e.g. Alpaca-CoT's) replaced the PeftModel's
state_dict with one already filtered by get_peft_model_state_dict, code written for peft 0.2. Since
peft 0.3 (commit 75808eb, located in peft#286) save_pretrained calls get_peft_model_state_dict itself:
it filters the already-filtered dict again, looking for the adapter name ("default") that the first
pass stripped from every key, and keeps nothing. Training runs normally; the final adapter_model.bin
is 443 bytes (here an adapter_model.safetensors with no tensor), and the adapter loaded from it is the
base model. From peft 0.20.0 on, get_peft_model_state_dict keeps a state dict whose keys no longer
name the adapter instead of emptying it (0.13.2 to 0.19.1 write the empty file here).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="state-dict-patch-empty-adapter",
    title="alpaca-lora's model.state_dict patch: adapter_model.bin is 443 bytes, the saved adapter has no weights",
    references=["huggingface/peft#286", "tloen/alpaca-lora#293", "tloen/alpaca-lora#363", "tloen/alpaca-lora#446",
                "tloen/alpaca-lora#539", "PhoebusSi/Alpaca-CoT#111"],
    family="save-load-merge",
    tags=["lora", "peft", "save", "alpaca-lora", "silent"],
    affected={"peft": "<0.20.0"},  # bisected: reproduced at peft 0.19.1, not-reproduced from 0.20.0 (benchsuite bisect --write)
    symptom=Symptom(description="after training, the adapter file save_pretrained wrote holds no tensor",
                    observed="adapter_empty"),
    fixed_in="peft 0.20.0",
)


def _train_and_save(ctx, patch_state_dict):
    import os

    from peft import get_peft_model, get_peft_model_state_dict
    from safetensors.torch import load_file

    base = ctx.text_model()
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
    if patch_state_dict:  # alpaca-lora finetune.py, as shipped
        old_state_dict = model.state_dict
        model.state_dict = (
            lambda self, *_, **__: get_peft_model_state_dict(self, old_state_dict())
        ).__get__(model, type(model))
    result = ctx.train(model)
    path = os.path.join(ctx.workdir, "patched" if patch_state_dict else "plain")
    model.save_pretrained(path)
    saved = load_file(os.path.join(path, "adapter_model.safetensors"))
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    result.extra.update(adapter_empty=len(saved) == 0, saved_tensors=len(saved), lora_tensors=len(lora),
                        file_bytes=os.path.getsize(os.path.join(path, "adapter_model.safetensors")))
    return result


@case.trigger
def trigger(ctx):
    return _train_and_save(ctx, patch_state_dict=True)


@case.fix("delete the model.state_dict patch: save_pretrained filters the adapter weights itself")
def no_patch(ctx):
    return _train_and_save(ctx, patch_state_dict=False)
