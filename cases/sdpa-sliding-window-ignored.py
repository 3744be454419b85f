"""Mistral with the default SDPA attention: the sliding window is ignored, every token attends to the whole prefix.

Mistral (and the models that copy its attention: Mixtral, Starcoder2, Qwen2 with use_sliding_window) restrict
attention to the last `config.sliding_window` tokens. transformers' SDPA path, Mistral's default attention from
4.37, built its mask with `_prepare_4d_causal_attention_mask_for_sdpa`, which dropped the mask for an
all-ones attention_mask and ran SDPA with is_causal=True: full causal attention, no window. Only eager and
flash attention applied the window, so a model trained or evaluated with SDPA on sequences longer than the
window silently computed something else than the one it was trained as (transformers#28980, fixed by PR
#30127; Qwen2's SDPA path lacked the window too and only warned "Sliding Window Attention is enabled but not
implemented for `sdpa`", LlamaFactory#7063). Measured directly: a token further back than the window reaches
(through both layers) must not change the last position's logits.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="sdpa-sliding-window-ignored",
    title="Mistral with attn_implementation='sdpa' (the default): sliding_window ignored, tokens attend past "
          "the window",
    references=["huggingface/transformers#28980", "huggingface/transformers#30127", "hiyouga/LlamaFactory#7063"],
    family="attention",
    tags=["attention", "sdpa", "sliding-window", "mistral", "silent"],
    applies={"transformers": ">=4.37"},  # Mistral has an SDPA attention from 4.37
    # bisected (benchsuite bisect --package transformers --from 4.37.0 --write): reproduced at 4.39.3, not reproduced
    # from 4.40.0 (PR #30127)
    affected={"transformers": "<4.40"},
    symptom=Symptom(
        description="changing a token outside the sliding window (of both layers) changes the last position's "
                    "logits: the attention is not windowed",
        observed="window_ignored",
    ),
)

WINDOW = 4
SEQ_LEN = 16  # two layers reach back at most 2 * WINDOW tokens; position 0 is 15 back


def _reach(ctx, implementation="sdpa"):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=WINDOW,
                           max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    config._attn_implementation = implementation
    torch.manual_seed(ctx.seed)
    model = MistralForCausalLM(config)
    model.train()  # as in training (no dropout in this config)
    g = torch.Generator().manual_seed(ctx.seed)
    ids = torch.randint(3, 64, (2, SEQ_LEN), generator=g)
    changed = ids.clone()
    changed[:, 0] = 3 + (ids[:, 0] - 2) % 61  # another token at position 0 (ids 3..63)
    mask = torch.ones_like(ids)  # the all-ones attention_mask a collator passes
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1]
        b = model(input_ids=changed, attention_mask=mask, use_cache=False).logits[:, -1]
    drift = float((a - b).abs().max())
    return ctx.observed(window_ignored=drift > 1e-5, last_logit_drift=drift,
                        implementation=str(getattr(model.config, "_attn_implementation", None)))


@case.trigger
def trigger(ctx):
    return _reach(ctx)


@case.fix("load the model with attn_implementation='eager' (or flash_attention_2), which apply the window")
def eager(ctx):
    return _reach(ctx, "eager")
