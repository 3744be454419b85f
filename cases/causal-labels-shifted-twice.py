"""Labels shifted by hand for a causal LM: the model shifts them again and trains next-next-token prediction.

*ForCausalLM models compute the loss as cross-entropy between logits[:, :-1] and labels[:, 1:]: the shift
is inside the model, so labels must be a copy of input_ids. A training script that "prepares next-token
targets" itself (labels = input_ids[1:] + [-100]) gets them shifted a second time: every position is
trained to predict the token two steps ahead. Training runs, the loss falls, nothing warns, and the
model generates garbage.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="causal-labels-shifted-twice",
    title="Causal LM labels pre-shifted by the user are shifted again inside the model: trains t+2 prediction",
    references=["InternLM/InternLM#318", "huggingface/transformers#32944", "huggingface/transformers#44642",
                "huggingface/transformers#35066"],
    family="data",
    tags=["data", "labels", "causal-lm", "silent"],
    affected={},  # the shift lives in the model's loss in every release; the labels are the user's
    symptom=Symptom(
        description="the loss the model returns is the cross-entropy against the token two positions ahead, "
                    "not the next token",
        observed="trains_token_after_next",
    ),
    notes="Measured on the first batch before any step: the model's own loss is compared with two references "
          "computed from the same logits (targets = input_ids shifted by 1, and by 2). transformers >= 4.50 "
          "(ForCausalLMLoss) also takes shift_labels=, the pre-shifted targets, without shifting them again.",
)


def _batch(ctx, tokenizer):
    texts = [s + " <eos>" for s in ctx.sentences(4, words=10)]
    enc = tokenizer(texts, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _ce(logits, targets):
    import torch.nn.functional as F
    return float(F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                 ignore_index=-100))


def _train(ctx, labels_mode="pre_shifted"):
    import torch

    tokenizer = ctx.tokenizer()
    model = ctx.text_model()
    batch = _batch(ctx, tokenizer)
    ids = batch["input_ids"]
    pad_col = torch.full((ids.size(0), 1), -100)
    pre_shifted = torch.cat([ids[:, 1:], pad_col], dim=1)  # the user's "next-token targets"
    if labels_mode == "pre_shifted":          # the reported script
        batch["labels"] = pre_shifted
    elif labels_mode == "input_ids":          # the documented usage: the model shifts
        batch["labels"] = ids.clone()
    else:  # shift_labels= takes the pre-shifted targets as they are (labels= must still be given)
        batch["labels"] = ids.clone()
        batch["shift_labels"] = pre_shifted
    model.eval()
    with torch.no_grad():
        out = model(**batch)
        logits = out.logits
    next_tok = _ce(logits[:, :-1], ids[:, 1:])       # position t predicts t+1
    after_next = _ce(logits[:, :-2], ids[:, 2:])     # position t predicts t+2
    loss = float(out.loss)
    result = ctx.train(model, batch=batch)
    result.extra.update(
        trains_token_after_next=abs(loss - after_next) < 1e-4 and abs(loss - next_tok) > 1e-3,
        model_loss=loss, next_token_loss=next_tok, token_after_next_loss=after_next,
    )
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("labels = input_ids (the model shifts them itself)")
def labels_are_input_ids(ctx):
    return _train(ctx, labels_mode="input_ids")


@case.fix("pass the pre-shifted targets as shift_labels= instead of labels=",
          applies={"transformers": ">=4.50"})
def shift_labels_kwarg(ctx):
    return _train(ctx, labels_mode="shift_labels")
