"""A NaN training loss never reaches the log: logging_nan_inf_filter (default True) reports 0.0 instead.

`TrainingArguments.logging_nan_inf_filter` defaults to True: when a step's loss is NaN or inf the
Trainer adds "the average of the previous logged losses" to its running loss instead, only for the
log. Right after a log (logging_steps=1, or the first steps) that running loss is 0, so the NaN step
is logged as `loss 0.0`, and every later step of a run whose weights the NaN already destroyed is
logged as 0.0 too. The backward and the optimizer step still ran on the NaN: the weights are NaN while
log_history, the progress bar and every tracker fed from the logs show a finite loss.
Here the NaN comes from one regression row whose target is missing (NaN, as a blank cell read from a
CSV), trained with the real Trainer on a tiny LlamaForSequenceClassification (num_labels=1, MSE).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="nan-loss-hidden-by-logging-filter",
    title="Training loss logged as 0.0 while the real loss is NaN and the weights are NaN "
          "(logging_nan_inf_filter=True)",
    references=["huggingface/trl#6702", "huggingface/trl#6668", "huggingface/transformers#13758"],
    signs=["loss-zero", "loss-nonfinite", "grad-norm-nonfinite"],  # what its training log shows (doctor --log)
    family="loss",
    tags=["logging", "nan", "trainer", "silent"],
    affected={},
    symptom=Symptom(
        description="a training step's loss is NaN (the weights become NaN) while every loss in log_history is "
                    "finite (0.0 for the NaN steps)",
        observed="nan_hidden_in_log",
    ),
)


def _rows(model, nan_row=True):
    import torch

    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(4):
        ids = torch.randint(3, model.config.vocab_size, (8,), generator=g)
        target = float("nan") if (nan_row and i == 1) else float(i) / 3
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                     "labels": torch.tensor(target, dtype=torch.float32)})
    return rows


def _train(ctx, nan_row=True, **args):
    import math

    import torch
    from transformers import TrainerCallback

    class Logged(TrainerCallback):
        def __init__(self):
            self.losses = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    model = ctx.seq_cls_model(num_labels=1)  # regression head: MSE on float targets
    rows = _rows(model, nan_row)
    if not nan_row:  # the fix: drop the rows whose target is missing
        rows = [r for r in rows if not torch.isnan(r["labels"])]
    logged = Logged()
    result = ctx.trainer_train(model, rows, callbacks=[logged], max_steps=3, per_device_train_batch_size=2,
                               learning_rate=1e-3, **args)
    step_nan = any(math.isnan(x) or math.isinf(x) for x in result.losses)
    logged_finite = bool(logged.losses) and all(math.isfinite(x) for x in logged.losses)
    weights_nan = any(torch.isnan(p).any().item() for p in model.parameters())
    result.extra.update(logged_losses=logged.losses, step_losses=[repr(x) for x in result.losses],
                        weights_nan=weights_nan, nan_hidden_in_log=step_nan and logged_finite)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("drop the rows whose regression target is missing (NaN) before training")
def drop_nan_rows(ctx):
    return _train(ctx, nan_row=False)


@case.fix("TrainingArguments(logging_nan_inf_filter=False): the log shows nan", works=False,
          note="the NaN now shows in log_history, but the step still ran on it: the weights are NaN")
def no_filter(ctx):
    return _train(ctx, logging_nan_inf_filter=False)
