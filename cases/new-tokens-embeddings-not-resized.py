"""Tokens added to the tokenizer, the model's embeddings left as they were: IndexError at the first step.

tokenizer.add_tokens / add_special_tokens give the new tokens ids past the model's vocabulary;
embed_tokens still has its old number of rows, so the first batch that holds one of them fails in the
embedding lookup: "IndexError: index out of range in self" on the CPU (a device-side assert on CUDA).
model.resize_token_embeddings(len(tokenizer)) after adding the tokens grows embed_tokens (and a tied
or untied lm_head) to the tokenizer's size.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="new-tokens-embeddings-not-resized",
    title="Tokens added without resize_token_embeddings: IndexError index out of range in self",
    references=["huggingface/transformers#11102", "huggingface/transformers#12763", "mickeysjm/R-BERT#5",
                "huggingface/transformers#1062"],
    family="data",
    tags=["tokenizer", "new-tokens", "embeddings", "crash"],
    affected={},
    symptom=Symptom(
        description="IndexError from the embedding lookup at the first batch holding an added token",
        exception="IndexError",
        message=r"index out of range in self",
    ),
)

NEW_TOKENS = ["<tool_call>", "</tool_call>", "<think>"]


def _train(ctx, resize: bool):
    tokenizer = ctx.tokenizer()
    model = ctx.text_model()
    tokenizer.add_special_tokens({"additional_special_tokens": NEW_TOKENS})
    if resize:
        model.resize_token_embeddings(len(tokenizer))
    rows = []
    for s in ctx.sentences(4, words=6):
        ids = tokenizer(f"<think> {s} <tool_call> </tool_call>")["input_ids"]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    return ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4)


@case.trigger
def trigger(ctx):
    return _train(ctx, resize=False)


@case.fix("model.resize_token_embeddings(len(tokenizer)) after adding the tokens")
def resize(ctx):
    return _train(ctx, resize=True)
