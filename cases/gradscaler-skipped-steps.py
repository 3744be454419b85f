"""GradScaler silently skips optimizer steps on overflow; the scheduler then warns.

When the scaled gradients overflow, scaler.step() does not call optimizer.step() and halves the
scale. Nothing is printed about the skip itself; what users see is torch's "Detected call of
`lr_scheduler.step()` before `optimizer.step()`" and weights that do not move. An overly large
init_scale makes every early step overflow.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="gradscaler-skipped-steps",
    title="GradScaler skips every step on overflow: lr_scheduler.step() before optimizer.step(), weights unchanged",
    references=["huggingface/transformers#11106", "pytorch/pytorch#55585"],
    signs=["steps-skipped"],  # what its training log shows (doctor --log)
    family="mixed-precision",
    tags=["mixed-precision", "fp16", "gradscaler", "silent"],
    affected={},
    symptom=Symptom(
        description="UserWarning: Detected call of `lr_scheduler.step()` before `optimizer.step()`; "
                    "the trainable weights never change",
        warning=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`",
        unchanged=r".",
    ),
)


def _train(ctx, init_scale=2.0**40, sync_scheduler=False):
    import torch

    model = ctx.causal_model()
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    if not sync_scheduler:
        return ctx.train(model, autocast_dtype=torch.float16, scaler=scaler,
                         scheduler_fn=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))

    class StepWhenStepped:  # the circulated remedy: step the scheduler only if the scale did not drop
        def __init__(self, opt):
            self.inner = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
            self.scale = scaler.get_scale()

        def step(self):
            if scaler.get_scale() >= self.scale:
                self.inner.step()
            self.scale = scaler.get_scale()

    return ctx.train(model, autocast_dtype=torch.float16, scaler=scaler, scheduler_fn=StepWhenStepped)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("GradScaler's default init_scale (2**16)")
def default_scale(ctx):
    return _train(ctx, init_scale=2.0**16)


@case.fix("call lr_scheduler.step() only when the scale did not drop (circulated remedy)", works=False,
          note="silences the warning; the skipped steps still leave the weights unchanged")
def step_scheduler_when_stepped(ctx):
    return _train(ctx, sync_scheduler=True)
