"""DataCollatorWithPadding on causal-LM rows of different lengths: the labels are not padded, the batch fails.

DataCollatorWithPadding pads through tokenizer.pad(), which pads input_ids, attention_mask and the
other tokenizer outputs but not a per-token `labels` list (it is meant for one label per sequence).
Rows tokenized to different lengths, each with labels = input_ids, reach the collator with input_ids
padded and labels ragged, and torch.tensor() fails: "ValueError: expected sequence of length 9 at dim 1
(got 7)", re-raised as "Unable to create tensor, you should probably activate truncation and/or padding
... Perhaps your features (`labels` in this case) have excessive nesting".
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="collator-with-padding-unpadded-labels",
    title="DataCollatorWithPadding does not pad token-level labels: ValueError Unable to create tensor "
          "(expected sequence of length)",
    references=["huggingface/transformers#8146", "huggingface/tokenizers#1284",
                "huggingface/transformers#39266"],
    family="data",
    tags=["data", "labels", "collator", "padding", "crash"],
    affected={},  # tokenizer.pad() leaves `labels` alone in every release run here
    symptom=Symptom(
        description="ValueError at the first batch: the ragged `labels` cannot become a tensor",
        exception="ValueError",
        message=r"Unable to create tensor|expected sequence of length",
    ),
)


def _train(ctx, collator="with_padding"):
    from transformers import DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithPadding

    tokenizer = ctx.tokenizer()
    model = ctx.text_model()
    rows = []
    for n, text in zip((9, 7, 5, 8), ctx.sentences(4, words=9)):
        enc = tokenizer(" ".join(text.split()[:n - 1]) + " <eos>")
        row = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if collator != "language_modeling":
            row["labels"] = list(enc["input_ids"])   # the usual causal-LM preprocessing
        rows.append(row)
    if collator == "with_padding":                     # the reported setup
        data_collator = DataCollatorWithPadding(tokenizer)
    elif collator == "max_length":                     # circulated: pad everything to a fixed length
        data_collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=12)
    elif collator == "seq2seq":                        # pads labels too, with -100
        data_collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    else:                                              # builds labels from the padded input_ids
        data_collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4,
                             trainer_kwargs={"data_collator": data_collator})


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100): pads labels with -100")
def seq2seq_collator(ctx):
    return _train(ctx, collator="seq2seq")


@case.fix("DataCollatorForLanguageModeling(tokenizer, mlm=False) and no labels column (it copies input_ids)")
def lm_collator(ctx):
    return _train(ctx, collator="language_modeling")


@case.fix("DataCollatorWithPadding(padding='max_length', max_length=...) (circulated)", works=False,
          note="pads input_ids to the fixed length but still leaves labels ragged")
def pad_to_max_length(ctx):
    return _train(ctx, collator="max_length")
