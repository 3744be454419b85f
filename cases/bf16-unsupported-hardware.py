"""TrainingArguments(bf16=True) on a GPU without bfloat16 support (pre-Ampere): the run refuses to start.

Needs such a GPU (compute capability below 8.0, e.g. a V100 or T4); elsewhere it reports skipped.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="bf16-unsupported-hardware",
    title="bf16=True on a pre-Ampere GPU: Your setup doesn't support bf16/gpu",
    references=["tatsu-lab/stanford_alpaca#133", "lm-sys/FastChat#399"],
    family="mixed-precision",
    tags=["mixed-precision", "bf16", "hardware"],
    affected={},
    requires_gpu_below=(8, 0),
    symptom=Symptom(
        description="ValueError: Your setup doesn't support bf16/gpu. You need torch>=1.10, using Ampere GPU ...",
        exception="ValueError",
        message=r"doesn't support bf16",
    ),
)


def _train(ctx, **precision):
    model = ctx.causal_model()
    return ctx.trainer_train(model, use_cpu=False, **precision)


@case.trigger
def trigger(ctx):
    return _train(ctx, bf16=True)


@case.fix("fp16=True instead of bf16 on that GPU")
def fp16(ctx):
    return _train(ctx, fp16=True)
