"""A sequence-classification head with **kwargs in forward: the Trainer stops dividing by accumulation.

The Trainer decides whether the loss still needs `/ gradient_accumulation_steps` by asking whether the
model consumes loss kwargs, and without an `accepts_loss_kwargs` attribute that falls back to "does
forward() declare **kwargs?". `LlamaForSequenceClassification` (the shared
GenericForSequenceClassification head) declares **kwargs, so the Trainer injects `num_items_in_batch`
and skips its division; the head hands the kwargs to the backbone but calls its loss function without
them, so the loss stays a per-micro-batch mean. Each optimizer step then sums gradient_accumulation_steps
means: the logged loss and the gradient are that many times too large. 4.54 moved the head onto
GenericForSequenceClassification; before, its forward took no **kwargs and the Trainer divided
(bisect: 4.53.3 not reproduced, 4.54.0 reproduced).
The case trains one SGD step (lr 1) of batch 1 x accumulation 4 with the real Trainer and compares
its update and recorded loss with the gradient and loss of the same four rows as one batch.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="seqcls-accumulation-loss-not-divided",
    title="LlamaForSequenceClassification + gradient accumulation: loss and gradient N times too large "
          "(forward has **kwargs, the Trainer stops dividing)",
    references=["huggingface/transformers#47688", "huggingface/transformers#47690"],
    family="loss",
    tags=["accumulation", "trainer", "seq-cls", "logging", "silent"],
    # bisected (docs/results/bisect-seqcls-accumulation-loss-not-divided.json): reproduced at 4.46.3 and 4.47.1,
    # not at 4.48.0, 4.48.2, 4.50.2 or 4.53.0, again from 4.54.0; the Trainer's compute_loss_func exists from 4.46
    affected={"transformers": ">=4.46,!=4.48.*,!=4.49.*,!=4.50.*,!=4.51.*,!=4.52.*,!=4.53.*"},
    symptom=Symptom(
        description="batch 1 x accumulation 4 gives a loss and a weight update about 4x the loss and gradient of "
                    "the same four rows as one batch (per-micro-batch means summed, never divided)",
        observed="accumulated_loss_inflated",
    ),
    notes="Measured: the SGD update (lr 1) of batch 1 x accumulation 4 over the gradient norm of the four rows as "
          "one batch, and the recorded step loss over that batch's loss (both ~4 with the bug, 1 when fixed).",
)

ACCUMULATION = 4


def _reference(ctx):
    """The loss and the gradient norm of the full batch of four rows, computed directly (no Trainer)."""
    import torch

    model = ctx.seq_cls_model(num_labels=3)
    rows = ctx.dataset(model, n=4, task="seq_cls")
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    loss = model(**batch).loss
    loss.backward()
    grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    return float(loss), float(grad)


def _compare(ctx, opt_out=False, loss_func=False):
    import torch

    model = ctx.seq_cls_model(num_labels=3)
    if opt_out:
        model.accepts_loss_kwargs = False   # the Trainer reads this before its **kwargs signature check
    rows = ctx.dataset(model, n=4, task="seq_cls")
    kwargs = {}
    if loss_func:
        def loss_fn(outputs, labels, num_items_in_batch=None):
            total = torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="sum")
            return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())
        kwargs["trainer_kwargs"] = {"compute_loss_func": loss_fn}
    # one SGD step at lr 1: the update is the accumulated gradient itself
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    result = ctx.trainer_train(model, rows, optimizer=opt, max_steps=1, per_device_train_batch_size=1,
                               gradient_accumulation_steps=ACCUMULATION, learning_rate=1.0,
                               lr_scheduler_type="constant", max_grad_norm=0.0, **kwargs)
    update = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))))
    ref_loss, ref_grad = _reference(ctx)
    update_ratio, loss_ratio = update / ref_grad, result.losses[0] / ref_loss
    result.extra.update(update_ratio=update_ratio, loss_ratio=loss_ratio, loss_accumulated=result.losses[0],
                        loss_full_batch=ref_loss,
                        accumulated_loss_inflated=update_ratio > 1.5 or loss_ratio > 1.5)
    return result


@case.trigger
def trigger(ctx):
    return _compare(ctx)


# Both fixes are for the mechanism of 4.54 on (a model whose forward takes **kwargs makes the Trainer stop
# dividing). 4.46.x-4.47.x inflate the loss the same way through their first num_items_in_batch code, where
# neither fix helps (probed at 4.46.3 and 4.47.1); the fix there is 4.48.
@case.fix("model.accepts_loss_kwargs = False before building the Trainer (it then divides by accumulation)",
          applies={"transformers": ">=4.54"})
def opt_out(ctx):
    return _compare(ctx, opt_out=True)


@case.fix("compute_loss_func that sums the loss and divides by num_items_in_batch",
          applies={"transformers": ">=4.54"})
def loss_func(ctx):
    return _compare(ctx, loss_func=True)
