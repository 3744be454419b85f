"""modules_to_save=["embed_tokens", "lm_head"] on a tied-embedding model: the merged checkpoint reloads wrong.

With tie_word_embeddings=True, peft gives embed_tokens and lm_head separate trainable copies, which
drift apart in training; the adapter itself saves and reloads correctly. merge_and_unload puts the two
trained copies into the base model but leaves config.tie_word_embeddings=True, so save_pretrained
writes one shared matrix and from_pretrained ties lm_head to embed_tokens again: the trained output
head is replaced by the trained input embeddings, and the merged model's logits are not the adapter
model's (peft#2777; transformers#45127 after extending Qwen2.5-0.5B's vocabulary; the LlamaFactory
"additional_target: embed_tokens, lm_head" recipe). From peft 0.19.0 on, merge_and_unload sets
tie_word_embeddings=False when it merges such an adapter ("Input and output embeddings are no longer
tied after merging").
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="tied-modules-to-save-merged-reload",
    title="modules_to_save embed_tokens+lm_head with tie_word_embeddings=True: the saved merged model "
          "reloads with lm_head tied back to embed_tokens",
    references=["huggingface/peft#2777", "huggingface/transformers#45127", "hiyouga/LlamaFactory#6749",
                "huggingface/peft#2803"],
    family="save-load-merge",
    tags=["lora", "peft", "merge", "tied-embeddings", "modules-to-save", "new-tokens", "silent"],
    # reproduced at peft 0.17.1 (--with); the untie-on-merge code first ships in 0.19.0. With peft held at 0.18.1,
    # reproduced at transformers 4.57.6 and not at 5.0.0 (docs/results/bisect-tied-modules-to-save-merged-reload.json)
    affected={"peft": "<0.19.0", "transformers": "<5.0"},
    fixed_in="peft 0.19.0",
    symptom=Symptom(description="the merged model saved with save_pretrained and reloaded with from_pretrained gives "
                                "other logits than the trained adapter model", observed="reload_differs"),
)


def _train(ctx, untie_config=False, **lora_overrides):
    import os

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = ctx.text_model(tie_word_embeddings=True)
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM", modules_to_save=["embed_tokens", "lm_head"],
                                                 **lora_overrides))
    result = ctx.train(model)
    batch = ctx.batch(model, task="none")
    model.eval()
    with torch.no_grad():
        adapter_logits = model(**batch).logits
    merged = model.merge_and_unload()
    if untie_config:
        merged.config.tie_word_embeddings = False
    path = os.path.join(ctx.workdir, "merged-untied" if untie_config else "merged")
    merged.save_pretrained(path)
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        reloaded_logits = reloaded(**batch).logits
    diff = (adapter_logits - reloaded_logits).abs().max().item()
    result.extra.update(reload_differs=diff > 1e-3, max_logit_diff=diff,
                        saved_tie_word_embeddings=bool(getattr(reloaded.config, "tie_word_embeddings", None)),
                        lm_head_is_embeddings=reloaded.lm_head.weight.data_ptr()
                        == reloaded.model.embed_tokens.weight.data_ptr())
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("merged.config.tie_word_embeddings = False before merged.save_pretrained()")
def untie_config(ctx):
    return _train(ctx, untie_config=True)


@case.fix("LoraConfig(ensure_weight_tying=True): one shared trainable copy for both layers",
          applies={"peft": ">=0.18"}, works=False,
          note="peft 0.18.1 (the only affected releases that have the option): the merged checkpoint still "
               "reloads with other logits (max diff 1.37 here)")
def ensure_weight_tying(ctx):
    return _train(ctx, ensure_weight_tying=True)
