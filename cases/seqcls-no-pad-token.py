"""A decoder-only model for sequence classification with no pad token: batches larger than 1 fail.

LlamaForSequenceClassification (and the other decoder-only *ForSequenceClassification classes) scores
the last non-padding token of each row, which it finds through config.pad_token_id. Llama-family
checkpoints ship without a pad token, so a reward model or classifier trained on batches of two or
more raises "Cannot handle batch sizes > 1 if no padding token is defined." on the first forward.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="seqcls-no-pad-token",
    title="ValueError: Cannot handle batch sizes > 1 if no padding token is defined (decoder-only reward model)",
    references=["huggingface/trl#422", "babylm/evaluation-pipeline-2023#5"],
    family="data",
    tags=["reward-model", "sequence-classification", "crash"],
    affected={},  # every transformers release this was run on (4.57.6, 5.23.0) raises it
    symptom=Symptom(
        description="ValueError at the first forward of a batch of 2 when config.pad_token_id is None",
        exception="ValueError",
        message=r"Cannot handle batch sizes > 1 if no padding token is defined",
    ),
)


def _train(ctx, pad_token_id=None, batch_size=2):
    from benchsuite.models import tiny_llama

    model = tiny_llama("seq_cls", seed=ctx.seed, num_labels=2, pad_token_id=None)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return ctx.train(model, batch=ctx.batch(model, batch_size=batch_size, task="seq_cls"))


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("model.config.pad_token_id = tokenizer.pad_token_id (or the eos id when there is none)")
def set_pad_token(ctx):
    return _train(ctx, pad_token_id=2)


@case.fix("per_device_train_batch_size=1 (circulated)", works=True,
          note="works, at the price of batches of one; the pad token is still undefined for evaluation batches")
def batch_of_one(ctx):
    return _train(ctx, batch_size=1)
