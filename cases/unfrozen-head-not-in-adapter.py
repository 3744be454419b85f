"""A layer unfrozen by hand next to LoRA (the classification head) trains, but save_pretrained leaves it out.

A PeftModel's save_pretrained writes the adapter weights and the modules listed in modules_to_save,
nothing else. A script that builds the LoRA model without task_type (or, as in peft#310, with a peft
release that did not add the head itself) and sets requires_grad=True on the sequence-classification
head by hand trains the head with the adapters, evaluates well in memory, and saves an adapter without
it: PeftModel.from_pretrained on a fresh base gets the head's random initialisation back, and the
reloaded classifier's scores are not the trained model's. No warning is given at save or load time.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="unfrozen-head-not-in-adapter",
    title="Classification head unfrozen with requires_grad=True beside LoRA: trained, but not in adapter_model "
          "(reloaded head is random)",
    references=["huggingface/peft#310"],
    family="save-load-merge",
    tags=["lora", "peft", "save", "seq-cls", "modules-to-save", "silent"],
    affected={},
    symptom=Symptom(description="the saved adapter has no head weight; the model reloaded from it scores differently "
                                "from the trained model", observed="head_lost"),
)


def _train(ctx, task_type=None, modules_to_save=None):
    import os

    import torch
    from peft import PeftModel, get_peft_model
    from safetensors.torch import load_file

    base = ctx.text_model("seq_cls", num_labels=2)
    model = get_peft_model(base, ctx.lora_config(base, task_type, modules_to_save=modules_to_save))
    if task_type is None and modules_to_save is None:  # as reported: the head made trainable by hand
        model.base_model.model.score.weight.requires_grad_(True)
    result = ctx.train(model, task="seq_cls")
    batch = ctx.batch(model, task="none")
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    path = os.path.join(ctx.workdir, f"adapter-{os.getpid()}")
    model.save_pretrained(path)
    saved = load_file(os.path.join(path, "adapter_model.safetensors"))
    reloaded = PeftModel.from_pretrained(ctx.text_model("seq_cls", num_labels=2), path).eval()
    with torch.no_grad():
        diff = (reloaded(**batch).logits - trained).abs().max().item()
    result.extra.update(head_lost=diff > 1e-4, max_logit_diff=diff,
                        head_saved=any("score" in k for k in saved), saved_tensors=len(saved))
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("LoraConfig(modules_to_save=['score']) instead of unfreezing the head by hand")
def modules_to_save(ctx):
    return _train(ctx, modules_to_save=["score"])


@case.fix("LoraConfig(task_type='SEQ_CLS'): peft adds the head ('classifier'/'score') to modules_to_save")
def seq_cls_task(ctx):
    return _train(ctx, task_type="SEQ_CLS")
