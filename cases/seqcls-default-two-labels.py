"""A sequence classifier loaded without num_labels trains on more than two classes: IndexError at the loss.

AutoModelForSequenceClassification.from_pretrained(checkpoint) builds a head of config.num_labels
outputs, and a checkpoint that never had a classification head (a base LM) gives the default, 2. A
dataset of five classes then fails at the first batch holding a label of 2 or more: cross-entropy
raises "IndexError: Target 3 is out of bounds." on the CPU (a device-side assert on CUDA). Passing
num_labels (or an id2label of that many entries) sizes the head.
"""
import os

from benchsuite.case import Case, Symptom

case = Case(
    id="seqcls-default-two-labels",
    title="Sequence classifier without num_labels gets 2 outputs: IndexError Target N is out of bounds",
    references=["Beomi/KcBERT#3", "TencentGameMate/gnn_cross_lingual#5", "ThilinaRajapakse/simpletransformers#748"],
    family="data",
    tags=["trainer", "seqcls", "labels", "crash"],
    affected={},
    symptom=Symptom(
        description="IndexError from cross-entropy at the first batch with a label >= 2",
        exception="IndexError",
        message=r"Target \d+ is out of bounds",
    ),
)

CLASSES = 5


def _train(ctx, **load):
    from transformers import AutoModelForSequenceClassification

    base = os.path.join(ctx.workdir, "base-lm")
    ctx.text_model().save_pretrained(base)  # a causal-LM checkpoint, as fine-tuning starts from one
    model = AutoModelForSequenceClassification.from_pretrained(base, **load)
    tokenizer = ctx.tokenizer()
    rows = [{**tokenizer(s), "labels": i % CLASSES} for i, s in enumerate(ctx.sentences(8, words=6))]
    return ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("from_pretrained(..., num_labels=5): a head of one output per class")
def num_labels(ctx):
    return _train(ctx, num_labels=CLASSES)


@case.fix("from_pretrained(..., id2label=..., label2id=...) with the five classes: num_labels follows")
def id2label(ctx):
    names = {i: f"class{i}" for i in range(CLASSES)}
    return _train(ctx, id2label=names, label2id={v: k for k, v in names.items()})
