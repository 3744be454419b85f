"""label_smoothing_factor + gradient accumulation: the loss and the gradient are N times too large.

With `label_smoothing_factor > 0` the Trainer pops the labels and computes the loss itself with
`LabelSmoother`, which averaged over the micro-batch's own tokens. For a model whose forward accepts
loss kwargs (every causal LM since the 4.46 accumulation rework), `training_step` skips the division
by `gradient_accumulation_steps`, assuming the loss was already normalised by `num_items_in_batch`,
which the smoother never received. Each optimizer step then sums N micro-batch means: gradient and
logged loss are N times those of the same rows as one batch. Without label smoothing the model's own
loss is normalised by `num_items_in_batch` and the two agree.
The case trains one SGD step (lr 1) of batch 1 x accumulation 4 with the real Trainer on a tiny Llama
and compares it with the label-smoothed loss and gradient of the same four rows as one batch.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="label-smoothing-accumulation-inflated",
    title="label_smoothing_factor with gradient accumulation: gradient and logged loss multiplied by "
          "gradient_accumulation_steps",
    references=["huggingface/transformers#46731", "huggingface/transformers#47261"],
    family="loss",
    tags=["accumulation", "trainer", "label-smoothing", "logging", "silent"],
    affected={"transformers": ">=4.46,<5.15"},
    symptom=Symptom(
        description="batch 1 x accumulation 4 with label smoothing: the weight update and the recorded loss are "
                    "~4x the label-smoothed gradient and loss of the same four rows as one batch",
        observed="accumulated_loss_inflated",
    ),
    fixed_in="transformers 5.15 (LabelSmoother takes num_items_in_batch)",
    notes="Range: 4.45.2 not reproduced, 4.46.3 / 4.57.6 / 5.0.0 / 5.14.0 reproduced, 5.15.0 / 5.25.0 not (bisect "
          "5.0.0..5.25.0 plus --with runs).",
)

ACCUMULATION = 4
EPSILON = 0.1


def _reference(ctx):
    """Label-smoothed loss of the four rows as one batch, and its gradient norm, computed directly."""
    import torch
    from transformers.trainer_pt_utils import LabelSmoother

    model = ctx.causal_model()
    rows = ctx.dataset(model, n=4)
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    labels = batch.pop("labels")
    loss = LabelSmoother(epsilon=EPSILON)(model(**batch), labels, shift_labels=True)
    loss.backward()
    grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    return float(loss), float(grad)


def _compare(ctx, opt_out=False, smoothing=EPSILON):
    import torch

    model = ctx.causal_model()
    if opt_out:
        model.accepts_loss_kwargs = False  # the Trainer then divides by accumulation itself
    rows = ctx.dataset(model, n=4)  # full rows, no -100: the micro-batch means average to the batch mean
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    result = ctx.trainer_train(model, rows, optimizer=opt, max_steps=1, per_device_train_batch_size=1,
                               gradient_accumulation_steps=ACCUMULATION, learning_rate=1.0,
                               lr_scheduler_type="constant", max_grad_norm=0.0, label_smoothing_factor=smoothing)
    update = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))))
    ref_loss, ref_grad = _reference(ctx)
    update_ratio = update / ref_grad
    loss_ratio = result.losses[0] / ref_loss
    result.extra.update(update_ratio=update_ratio, loss_ratio=loss_ratio, loss_accumulated=result.losses[0],
                        loss_full_batch=ref_loss, accumulated_loss_inflated=update_ratio > 1.5 or loss_ratio > 1.5)
    return result


@case.trigger
def trigger(ctx):
    return _compare(ctx)


@case.fix("model.accepts_loss_kwargs = False (the Trainer divides the smoothed loss by accumulation)",
          applies={"transformers": ">=4.50"})
def opt_out(ctx):
    return _compare(ctx, opt_out=True)
