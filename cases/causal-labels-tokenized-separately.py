"""A decoder-only model fine-tuned on prompt/answer pairs prepared as for seq2seq: the answer tokenized
alone as labels. The loss cannot line labels up with the logits.

A causal LM predicts the next token of input_ids, so its labels must be input_ids' own length (the
model shifts them). Preprocessing written for an encoder-decoder (input_ids = the prompt, labels = the
answer's own token ids) gives labels of another length, and the loss stops at the first step:
"ValueError: Expected input batch_size (N) to match target batch_size (M)". For a decoder-only model the
answer goes into input_ids after the prompt, and labels are that same sequence with the prompt's
positions set to -100.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="causal-labels-tokenized-separately",
    title="Causal LM with labels = the answer tokenized alone (seq2seq-style): ValueError Expected input "
          "batch_size to match target batch_size",
    references=["huggingface/transformers#12259", "huggingface/transformers#25460", "hiyouga/LlamaFactory#3765"],
    family="data",
    tags=["trainer", "labels", "sft", "crash"],
    affected={},
    symptom=Symptom(
        description="ValueError from the loss at the first step: logits and labels of different lengths",
        exception="ValueError",
        message=r"Expected input batch_size \(\d+\) to match target batch_size \(\d+\)",
    ),
)


def _train(ctx, joined: bool):
    tokenizer = ctx.tokenizer()
    model = ctx.text_model()
    rows = []
    for prompt, answer in zip(ctx.sentences(4, words=8), ctx.sentences(4, words=4, seed_offset=1)):
        p, a = tokenizer(prompt)["input_ids"], tokenizer(answer + " <eos>")["input_ids"]
        if joined:  # the decoder-only layout: one sequence, the prompt masked out of the loss
            ids, labels = p + a, [-100] * len(p) + a
        else:  # the seq2seq layout
            ids, labels = p, a
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4)


@case.trigger
def trigger(ctx):
    return _train(ctx, joined=False)


@case.fix("input_ids = prompt + answer, labels = the same ids with the prompt's positions set to -100")
def joined(ctx):
    return _train(ctx, joined=True)
