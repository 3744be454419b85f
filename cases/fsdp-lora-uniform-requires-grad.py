"""FSDP (FullyShardedDataParallel) around a LoRA model: "Must flatten tensors with uniform requires_grad".

FSDP's default use_orig_params=False flattens every parameter of a wrapped unit into one FlatParameter,
which can only have one requires_grad. A LoRA model mixes frozen base weights and trainable adapters in
the same modules, so wrapping it raises a ValueError before the first step (older torch releases say
"`FlatParameter` requires uniform `requires_grad`"). Reproduced with one rank under torchrun (a gloo
group on the CPU, nccl on a GPU), which is enough: the check runs when the model is wrapped.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="fsdp-lora-uniform-requires-grad",
    title="FSDP + LoRA: ValueError Must flatten tensors with uniform requires_grad when use_orig_params=False",
    references=["huggingface/peft#1702", "huggingface/transformers#27542"],
    family="distributed",
    tags=["lora", "fsdp", "distributed", "crash"],
    affected={},  # torch 2.13 (the only torch here) raises it; the reports show it on torch 2.0-2.2
    symptom=Symptom(
        description="ValueError when FSDP wraps a model whose parameters mix requires_grad True and False",
        exception="ValueError",
        message=r"uniform .?requires_grad",
    ),
)


def _train_rank(ctx, use_orig_params=False):
    """The rank ctx.torchrun(...) runs: the process group is ready (gloo on the CPU, nccl on a GPU)."""
    import torch
    from peft import get_peft_model
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    base = ctx.causal_model()
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
    batch = {k: v.to(ctx.device) for k, v in ctx.batch(model).items()}
    wrapped = FSDP(model, use_orig_params=use_orig_params, device_id=torch.device(ctx.device))
    return ctx.train(wrapped, batch=batch, loss_fn=lambda m, b: m(**b).loss)


def _train(ctx, use_orig_params=False):
    return ctx.torchrun(_train_rank, nproc=1, use_orig_params=use_orig_params)   # one rank under torchrun


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("FSDP(..., use_orig_params=True) (accelerate: fsdp_use_orig_params: true)")
def use_orig_params(ctx):
    return _train(ctx, use_orig_params=True)
