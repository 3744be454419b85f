"""prepare_model_for_kbit_training() on a model that is not quantized: every bf16/fp16 weight becomes float32.

QLoRA recipes call prepare_model_for_kbit_training(model) before get_peft_model, and the call stays when
the same script loads the model in bfloat16 or float16 without a quantization_config. The function casts
every float16/bfloat16 parameter that is not a 4-bit bitsandbytes tensor to float32 (meant for the few
layer norms and embeddings a quantized model keeps in 16 bits): on a 16-bit model that is all of them, so the
frozen base model takes twice the memory it was loaded in and the "16-bit LoRA" runs in float32, which ends
in an out-of-memory error on a GPU that fits the 16-bit model (peft#1149). Its use_gradient_checkpointing=True
default does not even apply here: checkpointing is only enabled for a quantized model. Nothing warns.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="kbit-prepare-upcasts-unquantized",
    title="prepare_model_for_kbit_training() on a bf16 model that is not quantized: every weight cast to float32 "
          "(twice the memory)",
    references=["huggingface/peft#1149", "bitsandbytes-foundation/bitsandbytes#1569", "huggingface/trl#4335"],
    family="quantization",
    tags=["lora", "peft", "qlora", "bf16", "memory", "silent"],
    # bisected (benchsuite bisect --package peft --from 0.4.0 --write): reproduced at 0.4.0 and 0.21.2, no status change
    affected={},
    applies={"peft": ">=0.4"},  # prepare_model_for_kbit_training (was prepare_model_for_int8_training)
    symptom=Symptom(
        description="after prepare_model_for_kbit_training the base model loaded in bfloat16 is float32: its "
                    "weights take twice the memory",
        observed="upcast_to_fp32",
    ),
)


def _train(ctx, prepare=True, **prepare_kwargs):
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = ctx.text_model().to(torch.bfloat16)  # from_pretrained(..., torch_dtype=torch.bfloat16), no quantization
    loaded_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if prepare:
        model = prepare_model_for_kbit_training(model, **prepare_kwargs)
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    base_dtypes = sorted({str(p.dtype) for p in model.parameters()})
    checkpointing = bool(getattr(model, "is_gradient_checkpointing", False))
    model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    result = ctx.train(model)
    result.extra.update(upcast_to_fp32=base_bytes > loaded_bytes, loaded_mib=loaded_bytes / 2**20,
                        base_mib_after_prepare=base_bytes / 2**20, base_dtypes=base_dtypes,
                        gradient_checkpointing=checkpointing)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("do not call prepare_model_for_kbit_training on a model that is not quantized: get_peft_model directly "
          "(gradient_checkpointing_enable() and enable_input_require_grads() yourself if wanted)")
def skip_prepare(ctx):
    return _train(ctx, prepare=False)


@case.fix("prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)", works=False,
          note="the flag only concerns checkpointing; the cast to float32 happens regardless")
def no_checkpointing(ctx):
    return _train(ctx, use_gradient_checkpointing=False)
