"""Decoder-only reward model with pad = eos: the reward is read before the FIRST eos, at the end of the prompt.

*ForSequenceClassification models score one position per row. Until transformers 4.49 it was found as
"the token before the first pad token": argmax(input_ids == pad_token_id) - 1. With the common recipe
pad_token = eos_token and a chat template that closes every turn with eos (Llama 3's <|eot_id|>), the
first "pad" is the eos that ends the prompt: chosen and rejected answers, which share the prompt, get
the same reward, read at the same prompt token. The pairwise loss sits at log 2 = 0.693 and the reward
model learns nothing; accuracy stays at chance.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="seqcls-reward-read-at-first-pad",
    title="Reward model with pad_token = eos_token reads the score at the first eos (end of prompt): "
          "loss stuck at 0.693",
    references=["huggingface/transformers#35352", "huggingface/transformers#35909",
                "YangRui2015/Generalizable-Reward-Model#1", "huggingface/transformers#35911"],
    signs=["loss-log2", "loss-flat"],  # what its training log shows (doctor --log)
    family="data",
    tags=["data", "reward-model", "sequence-classification", "padding", "silent"],
    affected={"transformers": "<4.49"},
    fixed_in="transformers 4.49",
    symptom=Symptom(
        description="chosen and rejected rows get exactly the same reward (read at the prompt's closing eos); "
                    "the pairwise loss is log 2",
        observed="reward_ignores_answer",
    ),
    notes="transformers 4.49 (PR 35911) takes the rightmost non-pad token instead, which here is the answer's "
          "last word: chosen and rejected then differ.",
)


def _batch(ctx, tokenizer):
    prompts = ctx.sentences(2, words=5)
    chosen = ctx.sentences(2, words=3, seed_offset=1)
    rejected = ctx.sentences(2, words=4, seed_offset=2)

    def encode(answers):   # a chat-like row: prompt <eos> answer <eos>, right-padded
        enc = tokenizer([f"{p} <eos> {a} <eos>" for p, a in zip(prompts, answers)], padding=True,
                        return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    ids_c, mask_c = encode(chosen)
    ids_r, mask_r = encode(rejected)
    return {"input_ids": ids_c, "attention_mask": mask_c, "input_ids_rejected": ids_r,
            "attention_mask_rejected": mask_r}


def _train(ctx, separate_pad=False):
    import torch

    tokenizer = ctx.tokenizer(pad=False)
    if separate_pad:
        tokenizer.pad_token = "<pad>"        # id 0, distinct from eos
    else:
        tokenizer.pad_token = tokenizer.eos_token   # the reported recipe
    model = ctx.text_model(task="seq_cls", num_labels=1, pad_token_id=tokenizer.pad_token_id)
    batch = _batch(ctx, tokenizer)
    with torch.no_grad():
        r_c = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        r_r = model(input_ids=batch["input_ids_rejected"],
                    attention_mask=batch["attention_mask_rejected"]).logits.squeeze(-1)
    same = bool(torch.allclose(r_c, r_r, atol=1e-6))
    result = ctx.train(model, batch=batch, loss_fn=ctx.pairwise_loss)
    result.extra.update(reward_ignores_answer=same, rewards_chosen=r_c.tolist(), rewards_rejected=r_r.tolist())
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("a pad token distinct from eos (tokenizer.pad_token = '<pad>' / add_special_tokens, "
          "model.config.pad_token_id to match)")
def separate_pad(ctx):
    return _train(ctx, separate_pad=True)
