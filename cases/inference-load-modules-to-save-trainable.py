"""An adapter loaded for inference (is_trainable=False) still has trainable modules_to_save weights.

PeftModel.from_pretrained freezes the LoRA weights of an adapter it loads for inference, but before
the fix in peft PR #2765 activating the adapter also set requires_grad=True on its modules_to_save
copies (a sequence-classification head, say): the "frozen" model reports trainable parameters, autograd
records graphs through them, and an optimizer built from requires_grad parameters trains the head.
The PR's description gives this example; its issue is peft#2759.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="inference-load-modules-to-save-trainable",
    title="PeftModel.from_pretrained(is_trainable=False) with modules_to_save: the saved head comes back trainable",
    references=["huggingface/peft#2759", "huggingface/peft#2765"],
    family="save-load-merge",
    tags=["lora", "peft", "inference", "modules-to-save", "silent"],
    affected={"peft": "<0.18"},
    fixed_in="peft 0.18.0 (PR #2765)",
    symptom=Symptom(description="after loading for inference, the modules_to_save head has requires_grad=True",
                    observed="head_trainable"),
)


def _load(ctx, freeze=False):
    import os

    from peft import PeftModel, get_peft_model

    path = os.path.join(ctx.workdir, "adapter")
    if not os.path.exists(path):
        base = ctx.seq_cls_model(num_labels=2)
        get_peft_model(base, ctx.lora_config(base, "SEQ_CLS", modules_to_save=["score"])).save_pretrained(path)
    model = PeftModel.from_pretrained(ctx.seq_cls_model(num_labels=2), path)  # is_trainable=False
    if freeze:
        model.requires_grad_(False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return ctx.observed(head_trainable=any("modules_to_save" in n for n in trainable), trainable=trainable[:8])


@case.trigger
def trigger(ctx):
    return _load(ctx)


@case.fix("model.requires_grad_(False) after loading for inference (or peft >= 0.18)")
def freeze(ctx):
    return _load(ctx, freeze=True)
