"""Binary classifier built with num_labels=1: the head trains as a regression (MSE on the class ids).

A sequence-classification model with `num_labels=1` and no `problem_type` infers "regression" on its
first labelled forward and computes `MSELoss(logit, label)`: the 0/1 class ids become regression
targets, the single logit is trained towards 0.0 and 1.0 instead of a log-odds, and `problem_type:
"regression"` is written into config.json, so every later load of the checkpoint keeps the MSE loss.
Older torch raised `Found dtype Long but expected Float` in the MSE backward; current torch accepts
integer targets, so nothing warns. The circulated remedy `problem_type="single_label_classification"`
with one label is worse: softmax over one logit is always 1 (a constant zero loss, transformers#45479);
recent releases reject that combination when the config is built.
The case trains 2 Trainer steps on a tiny LlamaForSequenceClassification with 0/1 integer labels.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="seqcls-num-labels-1-regression",
    title="num_labels=1 for binary classification: problem_type becomes 'regression', MSE on the 0/1 class ids",
    references=["activetigger/activetigger#683", "huggingface/transformers#45479"],
    family="loss",
    tags=["seq-cls", "problem-type", "labels", "silent"],
    affected={},
    symptom=Symptom(
        description="integer class labels, yet config.problem_type is 'regression' after training and the loss "
                    "is the mean squared error between the single logit and the class id",
        observed="trained_as_regression",
    ),
    notes="Under torch < 2.x the same setup raised 'Found dtype Long but expected Float' in the MSE backward "
          "(activetigger#683); with the torch this project pins it trains silently.",
)

LABELS = [0, 1, 1, 0]


def _train(ctx, num_labels=1, problem_type=None, float_labels=False):
    import torch
    import torch.nn.functional as F

    from benchsuite.models import tiny_llama

    overrides = {"problem_type": problem_type} if problem_type else {}
    model = tiny_llama("seq_cls", seed=ctx.seed, num_labels=num_labels, **overrides)
    g = torch.Generator().manual_seed(ctx.seed)
    rows = []
    for label in LABELS:
        ids = torch.randint(1, model.config.vocab_size, (12,), generator=g)
        target = torch.tensor([float(label)]) if float_labels else torch.tensor(label)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": target})
    result = ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3)
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    mse = F.mse_loss(out.logits.squeeze(-1).float(), batch["labels"].float().view(-1)) if num_labels == 1 else None
    loss_is_mse = mse is not None and torch.allclose(out.loss, mse)
    integer_labels = not batch["labels"].is_floating_point()
    result.extra.update(problem_type=model.config.problem_type, loss=float(out.loss), loss_is_mse=loss_is_mse,
                        integer_labels=integer_labels,
                        trained_as_regression=integer_labels and model.config.problem_type == "regression"
                        and loss_is_mse)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("num_labels=2 (cross-entropy over two logits, integer labels)")
def two_labels(ctx):
    return _train(ctx, num_labels=2)


@case.fix("num_labels=1 with problem_type='multi_label_classification' and float labels (BCE with logits)")
def bce_one_logit(ctx):
    return _train(ctx, problem_type="multi_label_classification", float_labels=True)


@case.fix("problem_type='single_label_classification' with num_labels=1 (circulated remedy)", works=False,
          note="cross-entropy over one logit is constant zero (transformers#45479): label 1 is out of range and "
               "recent releases reject the combination in the config")
def single_label_one_logit(ctx):
    return _train(ctx, problem_type="single_label_classification")
