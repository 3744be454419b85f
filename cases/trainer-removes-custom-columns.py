"""A compute_loss override reads a dataset column the model's forward does not take: the Trainer removed it.

With the default remove_unused_columns=True the Trainer drops every dataset column that is not an
argument of model.forward before batches reach compute_loss, so a custom loss that needs an extra
column (a per-example weight, an id) finds it missing. A datasets.Dataset loses the column in
Trainer._remove_unused_columns; a plain list of rows, as here, in the collator the Trainer wraps.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trainer-removes-custom-columns",
    title="Trainer(remove_unused_columns=True) drops the columns a custom compute_loss reads: KeyError",
    references=["huggingface/transformers#25054", "huggingface/datasets#3353"],
    family="data",
    tags=["trainer", "crash"],
    affected={},
    symptom=Symptom(description="KeyError: 'weight' inside the overridden compute_loss",
                    exception="KeyError", message=r"weight"),
    supports_model=True,
)


def _train(ctx, **training_args):
    import torch
    from transformers import Trainer

    class WeightedLoss(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            weight = inputs.pop("weight")
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            losses = torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="none")
            loss = (losses * weight).mean()
            return (loss, outputs) if return_outputs else loss

    model = ctx.seq_cls_model(num_labels=2)
    rows = ctx.dataset(model, n=8, task="seq_cls")  # a list of dicts: the Trainer's collator drops the column
    for i, row in enumerate(rows):
        row["weight"] = torch.tensor(1.0 + i % 2)
    return ctx.trainer_train(model, rows, trainer_class=WeightedLoss, max_steps=2,
                             per_device_train_batch_size=4, **training_args)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("TrainingArguments(remove_unused_columns=False)")
def keep_columns(ctx):
    return _train(ctx, remove_unused_columns=False)
