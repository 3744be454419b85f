"""LoRA on lm_head of a model with tied embeddings: merge_and_unload also changes the input embeddings.

With tie_word_embeddings=True (Gemma, Qwen2.5-0.5B, Llama-3.2-1B, ...) lm_head.weight and
embed_tokens.weight are one tensor. A LoRA adapter on lm_head changes only the output projection while
it is unmerged, but merge_and_unload adds B@A into that shared tensor in place: the input embeddings
get the output head's update too, and the merged model's logits differ from the adapter model's
(peft#2018, with Gemma-2). Since that report peft warns when it creates such an adapter
("tied_target_modules=['lm_head'] are part of the adapter. This can lead to complications") and
suggests untying the weights first; the merge itself is unchanged. Setting
model.config.tie_word_embeddings=False on the loaded model, as tried in the report, unties nothing;
LoraConfig(ensure_weight_tying=True) puts a second, tied LoRA on embed_tokens, so the shared tensor
receives the update twice and the merged model is further off.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="tied-lm-head-lora-merge",
    title="LoRA on lm_head with tie_word_embeddings=True: merge_and_unload also writes the update into embed_tokens",
    references=["huggingface/peft#2018", "huggingface/peft#2777", "huggingface/peft#2864"],
    family="save-load-merge",
    tags=["lora", "peft", "merge", "tied-embeddings", "silent"],
    affected={},
    symptom=Symptom(description="after merge_and_unload the input embeddings changed and the merged model's logits "
                                "differ from the adapter model's", observed="merged_differs"),
)

TARGETS = ["q_proj", "v_proj", "lm_head"]


def _merge(ctx, untie=False, config_only=False, **lora_overrides):
    import torch
    from peft import get_peft_model

    base = ctx.text_model(tie_word_embeddings=True)
    if untie:  # the untying recipe of peft's warning: a separate copy of the shared matrix for lm_head
        base.lm_head.weight = torch.nn.Parameter(base.model.embed_tokens.weight.detach().clone())
        base.config.tie_word_embeddings = False
    if config_only:
        base.config.tie_word_embeddings = False
    embeddings = base.model.embed_tokens.weight.detach().clone()
    # an adapter that looks trained: init_lora_weights=False draws lora_B non-zero
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM", target_modules=TARGETS, init_lora_weights=False,
                                                 **lora_overrides))
    batch = ctx.batch(model, task="none")
    model.eval()
    with torch.no_grad():
        adapter_logits = model(**batch).logits
        merged = model.merge_and_unload()
        merged_logits = merged(**batch).logits
    diff = (adapter_logits - merged_logits).abs().max().item()
    moved = not torch.equal(embeddings, merged.model.embed_tokens.weight)
    return ctx.observed(merged_differs=diff > 1e-3, max_logit_diff=diff, embeddings_changed=moved)


@case.trigger
def trigger(ctx):
    return _merge(ctx)


@case.fix("untie before get_peft_model: lm_head.weight = nn.Parameter(embed_tokens.weight.clone()), "
          "config.tie_word_embeddings=False (the recipe in peft's warning)")
def untie(ctx):
    return _merge(ctx, untie=True)


@case.fix("model.config.tie_word_embeddings = False on the loaded model", works=False,
          note="the config flag does not separate the two modules' shared Parameter")
def config_flag(ctx):
    return _merge(ctx, config_only=True)


@case.fix("LoraConfig(ensure_weight_tying=True)", works=False, applies={"peft": ">=0.18"},
          note="ties a LoRA on embed_tokens to the lm_head one: both merge into the shared tensor")
def ensure_weight_tying(ctx):
    return _merge(ctx, ensure_weight_tying=True)
