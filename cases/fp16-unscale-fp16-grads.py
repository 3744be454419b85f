"""fp16 AMP with fp16 trainable weights: "ValueError: Attempting to unscale FP16 gradients."

Loading the model in float16 and adding LoRA made the adapters float16 too before peft 0.12; the
GradScaler refuses to unscale float16 gradients. From 0.12 peft upcasts adapter weights to float32
(autocast_adapter_dtype=True). Reproduced on the CPU with torch.amp.GradScaler("cpu").
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="fp16-unscale-fp16-grads",
    title="fp16 model + LoRA + GradScaler: ValueError Attempting to unscale FP16 gradients",
    references=["shibing624/MedicalGPT#94", "huggingface/transformers#23165", "huggingface/peft#1249"],
    family="mixed-precision",
    tags=["mixed-precision", "fp16", "lora", "crash"],
    affected={"peft": "<0.12"},
    symptom=Symptom(
        description="ValueError: Attempting to unscale FP16 gradients. at scaler.unscale_/step",
        exception="ValueError",
        message=r"Attempting to unscale FP16 gradients",
    ),
    fixed_in="peft 0.12 (adapter weights upcast to float32)",
)


def _train(ctx, fp32_trainable=False, bf16=False):
    import torch
    from peft import get_peft_model

    model = ctx.causal_model().to(torch.bfloat16 if bf16 else torch.float16)
    model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    if fp32_trainable:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if bf16:
        return ctx.train(model, autocast_dtype=torch.bfloat16)
    return ctx.train(model, autocast_dtype=torch.float16, scaler=torch.amp.GradScaler("cpu"))


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("cast the trainable (adapter) weights to float32 after get_peft_model")
def fp32_adapters(ctx):
    return _train(ctx, fp32_trainable=True)


@case.fix("train in bf16 without a GradScaler")
def bf16_no_scaler(ctx):
    return _train(ctx, bf16=True)
