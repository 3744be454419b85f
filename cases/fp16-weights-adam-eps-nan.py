"""A model loaded in float16 and trained by the Trainer: NaN weights after one step, the log says loss 0.0.

With float16 parameters AdamW keeps its moments in float16 and computes m / (sqrt(v) + eps) there:
eps = 1e-8 rounds to 0 in float16 (its smallest subnormal is 6e-8), and v = (1 - beta2) * g**2
underflows to 0 for every gradient entry below about 8e-3 (and is exactly 0 for embedding rows no
token used). 0 / 0 and m / 0 write NaN and inf into the weights at the first optimizer step; every
later loss is NaN. The Trainer's logging_nan_inf_filter (on by default) keeps NaN out of the logs, so
what people see is "loss 0.0 from the second step" or eval_loss nan, whatever the learning rate.

The Trainer's default optimizer became the fused AdamW (adamw_torch_fused, with torch >= 2.8), whose
kernel does that arithmetic in float32: with it the weights stay finite. optim="adamw_torch" (or
torch.optim.AdamW in a custom loop) still fails the same way today.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="fp16-weights-adam-eps-nan",
    title="torch_dtype=float16 / model.half() + Trainer: weights NaN after step 1, logged loss 0.0",
    references=["jzhang38/TinyLlama#32", "huggingface/smol-course#61", "huggingface/peft#1568",
                "pytorch/pytorch#8860", "CambioML/pykoi#69"],
    signs=["loss-zero", "grad-norm-nonfinite"],  # what its training log shows (doctor --log)
    family="mixed-precision",
    tags=["mixed-precision", "fp16", "trainer", "optimizer", "nan", "silent"],
    affected={"transformers": "<4.54"},
    symptom=Symptom(
        description="the loss is NaN from the second optimizer step on while the Trainer's log shows finite "
                    "values (0.0): the NaN is filtered out of the logs",
        nonfinite_loss=True,
        observed="nan_hidden_in_logs",
    ),
    notes="adam_epsilon=1e-4, another circulated remedy, avoids the NaN but is no fix: the weights stay "
          "float16 and an update of about the learning rate is under half the float16 spacing at 1.0, so the "
          "norm weights never change (with the non-fused AdamW of older releases its float16 arithmetic moves "
          "some anyway, so its verdict depends on the release and it is not listed as a fix). "
          "optim='adamw_torch' reproduces the failure on every release. How the NaN is kept out of the logs is "
          "nan-loss-hidden-by-logging-filter (there the NaN comes from a NaN label).",
    fixed_in="transformers 4.54 (default optim adamw_torch_fused with torch >= 2.8: AdamW math in float32)",
)


def _train(ctx, dtype_name="float16", **training_args):
    import math

    import torch
    from transformers import TrainerCallback

    class LoggedLosses(TrainerCallback):
        def __init__(self):
            self.losses = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    model = ctx.causal_model().to(getattr(torch, dtype_name))  # from_pretrained(..., torch_dtype=torch.float16)
    logged = LoggedLosses()
    kw = dict(learning_rate=1e-4)
    kw.update(training_args)
    result = ctx.trainer_train(model, callbacks=[logged], **kw)
    real_nan = any(not math.isfinite(x) for x in result.losses)
    result.extra["logged_losses"] = logged.losses
    result.extra["weights_finite"] = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    result.extra["nan_hidden_in_logs"] = real_nan and all(math.isfinite(x) for x in logged.losses)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("load the model in float32; mixed precision (bf16=True / fp16=True) keeps float32 master weights")
def fp32_weights(ctx):
    return _train(ctx, dtype_name="float32", bf16=True)


@case.fix("optim='adamw_torch_fused' (the fused kernel computes the update in float32)")
def fused_adamw(ctx):
    return _train(ctx, optim="adamw_torch_fused")


@case.fix("lower the learning rate (circulated remedy)", works=False,
          note="the NaN comes from 0/0 in the denominator, which no learning rate scales away")
def lower_lr(ctx):
    return _train(ctx, learning_rate=1e-6)
