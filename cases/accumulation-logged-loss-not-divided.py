"""transformers 4.46-4.47: a model without loss kwargs trains with N-times gradients under accumulation.

The 4.46 accumulation rework stopped relying on accelerate to divide the loss by
`gradient_accumulation_steps` and left the division to models that take `num_items_in_batch`. For a
model whose forward takes no loss kwargs (here the user's own `torch.nn.Module` classifier, as in the
reports) the per-micro-batch mean went into backward undivided: each optimizer step summed N
micro-batch gradients, N times the gradient of the same rows as one batch (an N-times learning rate
with SGD, and N-times clipping pressure). In 4.46 the logged loss was still divided; 4.47 counted
`num_items_in_batch` for every batch with labels and stopped dividing the logged loss as well, so the
log showed N times the real loss. 4.48 divides the loss before backward when the model does not
normalise it ("Scale loss before backward").
The case trains one SGD step (lr 1) of batch 1 x accumulation 4 with the real Trainer and compares the
update and the logged loss (log_history) with the gradient and the mean loss of the same four rows as
one batch.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="accumulation-logged-loss-not-divided",
    title="Gradient accumulation with a model without loss kwargs: gradient (and, in 4.47, the logged loss) "
          "gradient_accumulation_steps times too large (transformers 4.46-4.47)",
    references=["huggingface/transformers#35204", "huggingface/transformers#37766",
                "huggingface/transformers#35207"],
    family="loss",
    tags=["accumulation", "trainer", "logging", "silent"],
    affected={"transformers": ">=4.46,<4.48"},
    symptom=Symptom(
        description="one step of batch 1 x accumulation 4: the weight update is ~4x the gradient of the same four "
                    "rows as one batch (4.47: the logged loss is ~4x their mean loss too)",
        observed="accumulation_not_divided",
    ),
    fixed_in="transformers 4.48 (the loss is divided before backward when no num_items_in_batch is used)",
)

ACCUMULATION = 4


def _model(ctx, loss_kwargs=False):
    import torch

    class Classifier(torch.nn.Module):  # the user's own model: forward(input_ids, attention_mask, labels)
        def __init__(self):
            super().__init__()
            torch.manual_seed(ctx.seed)
            self.embed = torch.nn.Embedding(64, 32)
            self.body = torch.nn.Linear(32, 32)
            self.head = torch.nn.Linear(32, 3)

        def logits(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
            return self.head(torch.tanh(self.body(pooled)))

        def forward(self, input_ids, attention_mask, labels=None):
            logits = self.logits(input_ids, attention_mask)
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    class ClassifierWithLossKwargs(Classifier):  # takes num_items_in_batch, as the library's models do
        def forward(self, input_ids, attention_mask, labels=None, **loss_kwargs):
            logits = self.logits(input_ids, attention_mask)
            loss = None
            if labels is not None:
                count = loss_kwargs.get("num_items_in_batch")
                reduction = "sum" if count is not None else "mean"
                loss = torch.nn.functional.cross_entropy(logits, labels, reduction=reduction)
                loss = loss / count if count is not None else loss
            return {"loss": loss, "logits": logits}

    return ClassifierWithLossKwargs() if loss_kwargs else Classifier()


def _rows(ctx):
    import torch

    g = torch.Generator().manual_seed(ctx.seed)
    ids = torch.randint(1, 64, (4, 8), generator=g)
    labels = torch.tensor([0, 1, 2, 1])
    return [{"input_ids": ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": labels[i]}
            for i in range(4)]


def _train(ctx, accumulation=ACCUMULATION, batch=1, loss_kwargs=False):
    import torch
    from transformers import TrainerCallback

    class Logged(TrainerCallback):
        def __init__(self):
            self.losses = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    model, rows = _model(ctx, loss_kwargs), _rows(ctx)
    # the mean loss of the four rows as one batch and its gradient norm, before training
    reference = model(**{k: torch.stack([r[k] for r in rows]) for k in rows[0]})["loss"]
    reference.backward()
    ref_grad = float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())))
    model.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # one step at lr 1: the update is the gradient
    logged = Logged()
    result = ctx.trainer_train(model, rows, optimizer=opt, callbacks=[logged], max_steps=1,
                               per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                               learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0)
    update = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))))
    ratio = logged.losses[0] / float(reference)
    update_ratio = update / ref_grad
    result.extra.update(logged_loss=logged.losses[0], full_batch_loss=float(reference), logged_over_true=ratio,
                        update_over_true_gradient=update_ratio, logged_loss_inflated=ratio > 1.5,
                        accumulation_not_divided=ratio > 1.5 or update_ratio > 1.5)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("the same effective batch without accumulation (per_device_train_batch_size=4, accumulation 1)")
def no_accumulation(ctx):
    return _train(ctx, accumulation=1, batch=4)


@case.fix("forward(..., **loss_kwargs) that sums the loss and divides by num_items_in_batch")
def loss_kwargs(ctx):
    return _train(ctx, loss_kwargs=True)
