"""A Trainer subclass with its own compute_loss (a per-batch mean) + gradient accumulation: N times the loss.

Since transformers 4.46 the Trainer divides the loss by `gradient_accumulation_steps` only when it
believes the loss was not already normalised over the whole accumulated batch, and it decides that
from the model: a forward that takes loss kwargs (every causal LM) means "the model divides by
`num_items_in_batch`". A subclass that overrides `compute_loss` and returns an ordinary mean over its
micro-batch (the usual custom loss, or TRL's DPO/reward losses before they opted out) is then never
divided: each optimizer step sums N micro-batch means, so the gradient and the logged loss are N times
those of the same rows as one batch. Nothing warns.
The case trains one SGD step (lr 1) of batch 1 x accumulation 4 with the user's subclass on a tiny
Llama and compares the update and the recorded loss with the same loss over the four rows as one batch.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="custom-compute-loss-accumulation-not-divided",
    title="Custom compute_loss returning a batch mean + gradient accumulation: loss and gradient "
          "gradient_accumulation_steps times too large (transformers >= 4.46)",
    references=["hiyouga/LlamaFactory#7743", "huggingface/transformers#35856", "huggingface/trl#2615",
                "huggingface/trl#5710"],
    family="loss",
    tags=["accumulation", "trainer", "custom-loss", "logging", "silent"],
    affected={"transformers": ">=4.46"},
    notes="In 4.46-4.47 the opt-out does not help: the Trainer then divided neither the loss nor the gradient "
          "(see accumulation-logged-loss-not-divided), hence its applies >=4.48.",
    symptom=Symptom(
        description="batch 1 x accumulation 4 through the overridden compute_loss: weight update and recorded loss "
                    "~4x the gradient and loss of the same four rows as one batch",
        observed="accumulated_loss_inflated",
    ),
)

ACCUMULATION = 4


def _mean_loss(logits, labels):
    """The user's loss: next-token cross-entropy, mean over this micro-batch's labelled tokens."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def _trainer_class(mode):
    from transformers import Trainer

    class CustomLossTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if mode == "opt_out":  # the TRL / LlamaFactory workaround
                self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
            import torch.nn.functional as F

            labels = inputs.pop("labels")
            outputs = model(**inputs)
            if mode == "num_items" and num_items_in_batch is not None:
                logits = outputs.logits
                total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                        ignore_index=-100, reduction="sum")
                loss = total / num_items_in_batch
            else:
                loss = _mean_loss(outputs.logits, labels)
            return (loss, outputs) if return_outputs else loss

    return CustomLossTrainer


def _reference(ctx):
    import torch

    model = ctx.causal_model()
    rows = ctx.dataset(model, n=4)
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    labels = batch.pop("labels")
    loss = _mean_loss(model(**batch).logits, labels)
    loss.backward()
    grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    return float(loss), float(grad)


def _compare(ctx, mode="plain"):
    import torch

    model = ctx.causal_model()
    rows = ctx.dataset(model, n=4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    result = ctx.trainer_train(model, rows, optimizer=opt, trainer_class=_trainer_class(mode), max_steps=1,
                               per_device_train_batch_size=1, gradient_accumulation_steps=ACCUMULATION,
                               learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0)
    update = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))))
    ref_loss, ref_grad = _reference(ctx)
    update_ratio, loss_ratio = update / ref_grad, result.losses[0] / ref_loss
    result.extra.update(update_ratio=update_ratio, loss_ratio=loss_ratio, loss_accumulated=result.losses[0],
                        loss_full_batch=ref_loss, accumulated_loss_inflated=update_ratio > 1.5 or loss_ratio > 1.5)
    return result


@case.trigger
def trigger(ctx):
    return _compare(ctx)


@case.fix("self.model_accepts_loss_kwargs = False in the subclass's __init__ (the Trainer divides again)",
          applies={"transformers": ">=4.48"})
def opt_out(ctx):
    return _compare(ctx, mode="opt_out")


@case.fix("normalise the custom loss by num_items_in_batch (sum over tokens / num_items_in_batch)")
def num_items(ctx):
    return _compare(ctx, mode="num_items")
