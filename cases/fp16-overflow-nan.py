"""Pure fp16 training: a value past 65504 overflows and the loss turns NaN.

float16 tops out at 65504; a logit or activation beyond it becomes inf and the loss NaN (or 0 once a
scaler skips everything). Here the language-model head's weights are scaled so the logits overflow in
a model cast to float16, as they do when large models with big activations are trained in fp16.
"""
from benchsuite.case import Case, Explains, Symptom

case = Case(
    id="fp16-overflow-nan",
    title="Training a float16 model: logits overflow 65504 and the loss is NaN",
    references=["shibing624/MedicalGPT#116", "shibing624/MedicalGPT#359", "karpathy/nanoGPT#167"],
    signs=["loss-nonfinite", "grad-norm-nonfinite"],  # what its training log shows (doctor --log)
    family="mixed-precision",
    tags=["mixed-precision", "fp16", "nan"],
    affected={},
    symptom=Symptom(description="loss NaN (or inf) from the first step", nonfinite_loss=True),
    explains=[Explains("non-finite", note="NaN/Inf gradients reach the optimizer from the first step")],
)


def _train(ctx, dtype_name="float16", lr=1e-2):
    import torch

    model = ctx.causal_model()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(1e4)  # logits of order 1e5: past float16's range
    model = model.to(getattr(torch, dtype_name))
    return ctx.train(model, lr=lr, steps=2)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("train in bf16 (float32's range)")
def bf16(ctx):
    return _train(ctx, "bfloat16")


@case.fix("train in fp32")
def fp32(ctx):
    return _train(ctx, "float32")


@case.fix("lower the learning rate (circulated remedy)", works=False,
          note="the overflow is in the forward pass of the first step, before any update")
def lower_lr(ctx):
    return _train(ctx, lr=1e-5)
