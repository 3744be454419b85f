"""A causal-LM fine-tune whose data collator builds no labels: the Trainer stops at the first step.

The model computes a loss only when the batch has `labels`. DataCollatorWithPadding (and
DataCollatorForSeq2Seq) pad what the rows carry and add nothing, so rows tokenized for causal LM
(input_ids and attention_mask only) reach the model without labels, and Trainer.compute_loss raises
"ValueError: The model did not return a loss from the inputs, only the following keys: logits". For
causal LM, DataCollatorForLanguageModeling(mlm=False) makes the labels (input_ids, padding masked).
Copying input_ids into a labels column is not enough under DataCollatorWithPadding: tokenizer.pad()
pads the model's inputs but not labels, so rows of different lengths no longer make a tensor.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="causal-collator-builds-no-labels",
    title="Causal-LM Trainer with DataCollatorWithPadding: no labels, ValueError the model did not return a loss",
    references=["unslothai/unsloth#455", "unslothai/unsloth#1102", "huggingface/transformers#34392"],
    family="data",
    tags=["trainer", "collator", "labels", "crash"],
    affected={},
    symptom=Symptom(
        description="ValueError from Trainer.compute_loss at the first step: the batch had no labels",
        exception="ValueError",
        message=r"did not return a loss from the inputs",
    ),
    notes="The error lists what the model got ('the inputs it received are input_ids,attention_mask'): no "
          "labels there is this case. With labels listed, the model itself dropped the loss (a custom or "
          "patched forward), another cause.",
)


def _train(ctx, collator: str, labels: bool = False):
    from transformers import DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithPadding

    tokenizer = ctx.tokenizer()
    model = ctx.text_model()
    rows = [tokenizer(" ".join(s.split()[:n]) + " <eos>") for n, s in zip((8, 5, 7, 3), ctx.sentences(4, words=8))]
    rows = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"],
             **({"labels": list(r["input_ids"])} if labels else {})} for r in rows]
    make = {"padding": DataCollatorWithPadding, "seq2seq": DataCollatorForSeq2Seq,
            "lm": lambda t: DataCollatorForLanguageModeling(t, mlm=False)}[collator]
    return ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4,
                             trainer_kwargs={"data_collator": make(tokenizer)})


@case.trigger
def trigger(ctx):
    return _train(ctx, "padding")


@case.fix("DataCollatorForLanguageModeling(tokenizer, mlm=False): labels are input_ids with padding masked")
def lm_collator(ctx):
    return _train(ctx, "lm")


@case.fix("labels = input_ids in each row, then DataCollatorForSeq2Seq (pads labels with -100)")
def labels_and_seq2seq(ctx):
    return _train(ctx, "seq2seq", labels=True)


@case.fix("labels = input_ids in each row, keeping DataCollatorWithPadding", works=False,
          note="tokenizer.pad() pads input_ids and attention_mask, not labels: rows of different lengths "
               "make no tensor (ValueError at the first batch)")
def labels_with_padding_collator(ctx):
    return _train(ctx, "padding", labels=True)
