"""problem_type='multi_label_classification' with integer multi-hot labels: BCE refuses Long targets.

Multi-label classification in transformers is `problem_type="multi_label_classification"`, which
selects `BCEWithLogitsLoss`; the multi-hot label vectors a dataset yields are integers (0/1 columns),
and BCE-with-logits needs float targets: `RuntimeError: result type Float can't be cast to the
desired output type Long` at the first step. Dropping `problem_type` to let the model infer it does
not help: integer labels make it infer single-label classification, and the (batch, num_labels)
label matrix is flattened against the logits (`Expected input batch_size (2) to match target
batch_size (6)`).
The case trains a tiny LlamaForSequenceClassification (3 labels) with the real Trainer.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="multilabel-int-labels-bce",
    title="multi_label_classification with integer multi-hot labels: RuntimeError result type Float can't be "
          "cast to the desired output type Long",
    references=["Lightning-AI/torchmetrics#1367"],
    family="loss",
    tags=["seq-cls", "problem-type", "labels", "multi-label", "crash"],
    affected={},
    symptom=Symptom(description="RuntimeError from binary_cross_entropy_with_logits on the first training step",
                    exception="RuntimeError", message=r"can't be cast to the desired output type Long"),
)

MULTI_HOT = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]


def _train(ctx, problem_type="multi_label_classification", float_labels=False):
    import torch

    from benchsuite.models import tiny_llama

    overrides = {"problem_type": problem_type} if problem_type else {}
    model = tiny_llama("seq_cls", seed=ctx.seed, num_labels=3, **overrides)
    g = torch.Generator().manual_seed(ctx.seed)
    rows = []
    for hot in MULTI_HOT:
        ids = torch.randint(1, model.config.vocab_size, (12,), generator=g)
        labels = torch.tensor(hot, dtype=torch.float32 if float_labels else torch.long)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    result = ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3)
    result.extra["problem_type"] = model.config.problem_type
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("cast the multi-hot labels to float (labels.float(), or a float feature in the dataset)")
def float_labels(ctx):
    return _train(ctx, float_labels=True)


@case.fix("leave problem_type unset and let the model infer it (circulated remedy)", works=False,
          note="integer labels make the model infer single_label_classification: the label matrix is flattened "
               "against the logits, ValueError Expected input batch_size to match target batch_size")
def infer_problem_type(ctx):
    return _train(ctx, problem_type=None)
