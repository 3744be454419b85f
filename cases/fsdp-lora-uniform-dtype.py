"""FSDP + LoRA on a bfloat16 base: "Must flatten tensors with uniform dtype but got torch.bfloat16 and torch.float32".

get_peft_model() upcasts the new adapter weights to float32 (peft >= 0.12, autocast_adapter_dtype=True)
while the base model was loaded in bfloat16. FSDP (FSDP1, FlatParameter) flattens all parameters of a
wrapped unit into one tensor, which must have one dtype, so wrapping the whole PeftModel as one unit
raises before the first step, even with use_orig_params=True (which lifts the requires_grad rule, not
the dtype rule; the requires_grad variant is the case fsdp-lora-uniform-requires-grad). Reproduced with
two ranks under torchrun (gloo on the CPU, nccl with a GPU per rank).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="fsdp-lora-uniform-dtype",
    title="FSDP + LoRA on a bf16 model: ValueError Must flatten tensors with uniform dtype but got "
          "torch.bfloat16 and torch.float32",
    references=["huggingface/trl#1723", "eric-mitchell/direct-preference-optimization#90",
                "axolotl-ai-cloud/axolotl#1494", "huggingface/trl#1654"],
    family="distributed",
    tags=["lora", "fsdp", "distributed", "bf16", "crash"],
    affected={"peft": ">=0.12"},  # the float32 upcast of new adapters (autocast_adapter_dtype) came with peft 0.12
    notes="Reproduced on peft 0.21.2 (newest) and 0.13.2 (the oldest the project publishes, transformers 4.45.2); "
          "the >=0.12 bound follows from autocast_adapter_dtype's release and was not run below 0.13.2.",
    symptom=Symptom(
        description="ValueError when FSDP flattens a unit holding the bfloat16 base weights and the float32 LoRA "
                    "weights peft created",
        exception="ValueError",
        message=r"uniform dtype",
    ),
)


def _train_rank(ctx, no_upcast=False, peft_wrap_policy=False):
    import functools

    import torch
    from peft import get_peft_model
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    base = ctx.causal_model().to(torch.bfloat16)  # from_pretrained(..., torch_dtype=torch.bfloat16)
    config = ctx.lora_config(base, "CAUSAL_LM")
    model = (get_peft_model(base, config, autocast_adapter_dtype=False) if no_upcast
             else get_peft_model(base, config))
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    if peft_wrap_policy:  # what accelerate does for a PeftModel: each LoRA Linear in a unit of its own
        from peft.utils.other import fsdp_auto_wrap_policy
        policy = fsdp_auto_wrap_policy(model)
    else:  # fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP, one unit per decoder layer (as reported)
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer
        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
    wrapped = FSDP(model, use_orig_params=True, device_id=torch.device(ctx.device), auto_wrap_policy=policy)
    batch = {k: v.to(ctx.device) for k, v in ctx.batch(model).items()}
    result = ctx.train(wrapped, batch=batch, steps=2, loss_fn=lambda m, b: m(**b).loss)
    result.extra["param_dtypes"] = dtypes
    return result


def _run(ctx, **options):
    return ctx.torchrun(_train_rank, nproc=2, **options)


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("get_peft_model(model, config, autocast_adapter_dtype=False): adapters in the base's bfloat16",
          applies={"peft": ">=0.12"})
def no_upcast(ctx):
    return _run(ctx, no_upcast=True)


@case.fix("FSDP(auto_wrap_policy=peft.utils.other.fsdp_auto_wrap_policy(model)) (accelerate's "
          "fsdp_auto_wrap_policy for PEFT): the float32 LoRA layers get FSDP units of their own")
def peft_wrap_policy(ctx):
    return _run(ctx, peft_wrap_policy=True)
