"""A reward-model (SEQ_CLS) adapter merged on AutoModelForCausalLM: the trained score head is silently dropped.

A LoRA reward model saves its LoRA weights and, through modules_to_save, its trained `score` head.
StackLLaMA's merge_peft_adapter.py loaded every base with AutoModelForCausalLM before
PeftModel.from_pretrained and merge_and_unload: a causal LM has no `score` module, peft loads the
adapter without it and says nothing, and the merged checkpoint has no head. Loaded back with
AutoModelForSequenceClassification for RL, the head is freshly initialised and the rewards are noise
(trl#368, fixed in the example by trl PR #398: "if merging a reward model, load sequence
classification").
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="reward-adapter-merged-as-causal-lm",
    title="Reward (SEQ_CLS) adapter merged via AutoModelForCausalLM: the score head is dropped, merged rewards "
          "are random",
    references=["huggingface/trl#368", "huggingface/trl#398"],
    family="save-load-merge",
    tags=["lora", "peft", "merge", "reward-model", "modules-to-save", "silent"],
    affected={},
    symptom=Symptom(description="the merged reward model, loaded with AutoModelForSequenceClassification, gives other "
                                "rewards than the adapter it was merged from", observed="rewards_differ"),
)


def _paths(ctx):
    import os

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    base_dir = os.path.join(ctx.workdir, "base")
    adapter_dir = os.path.join(ctx.workdir, "reward-adapter")
    if not os.path.exists(os.path.join(adapter_dir, "adapter_config.json")):
        ctx.text_model().save_pretrained(base_dir)  # the base checkpoint, as published (a causal LM)
        rm = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
        rm = get_peft_model(rm, ctx.lora_config(rm, "SEQ_CLS"))  # modules_to_save: score, added by peft
        g = torch.Generator().manual_seed(ctx.seed + 1)
        with torch.no_grad():  # a reward model that looks trained: lora_B and the head moved
            for name, p in rm.named_parameters():
                if "lora_B" in name or "modules_to_save" in name:
                    p.add_(torch.randn(p.shape, generator=g) * 0.1)
        rm.save_pretrained(adapter_dir)
    return base_dir, adapter_dir


def _merge(ctx, merge_class="AutoModelForCausalLM"):
    import os

    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base_dir, adapter_dir = _paths(ctx)
    batch = ctx.batch(ctx.text_model(), task="none")
    reference = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1),
                                          adapter_dir).eval()
    with torch.no_grad():
        expected = reference(**batch).logits

    merge_base = getattr(transformers, merge_class).from_pretrained(
        base_dir, **({"num_labels": 1} if "Sequence" in merge_class else {}))
    merged = PeftModel.from_pretrained(merge_base, adapter_dir).merge_and_unload()  # merge_peft_adapter.py
    out = os.path.join(ctx.workdir, f"merged-{merge_class}")
    merged.save_pretrained(out)
    torch.manual_seed(ctx.seed)
    reward_model = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1).eval()  # as RL loads it
    with torch.no_grad():
        got = reward_model(**batch).logits
    diff = (got - expected).abs().max().item()
    return ctx.observed(rewards_differ=diff > 1e-3, max_reward_diff=diff, merged_class=type(merged).__name__,
                        merged_has_score=hasattr(merged, "score"))


@case.trigger
def trigger(ctx):
    return _merge(ctx)


@case.fix("load the base with AutoModelForSequenceClassification(num_labels=1) for the merge (trl PR #398)")
def seq_cls_base(ctx):
    return _merge(ctx, merge_class="AutoModelForSequenceClassification")
