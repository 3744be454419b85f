"""FSDP (FullyShardedDataParallel) around a LoRA model: "Must flatten tensors with uniform requires_grad".

FSDP's default use_orig_params=False flattens every parameter of a wrapped unit into one FlatParameter,
which can only have one requires_grad. A LoRA model mixes frozen base weights and trainable adapters in
the same modules, so wrapping it raises a ValueError before the first step (older torch releases say
"`FlatParameter` requires uniform `requires_grad`"). Reproduced here on the CPU with a one-process gloo
group, which is enough: the check runs when the model is wrapped.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="fsdp-lora-uniform-requires-grad",
    title="FSDP + LoRA: ValueError Must flatten tensors with uniform requires_grad when use_orig_params=False",
    references=["huggingface/peft#1702", "huggingface/transformers#27542"],
    tags=["lora", "fsdp", "distributed", "crash"],
    affected={},  # torch 2.13 (the only torch here) raises it; the reports show it on torch 2.0-2.2
    symptom=Symptom(
        description="ValueError when FSDP wraps a model whose parameters mix requires_grad True and False",
        exception="ValueError",
        message=r"uniform .?requires_grad",
    ),
)


def _train(ctx, use_orig_params=False):
    import os
    import socket

    import torch
    import torch.distributed as dist
    from peft import get_peft_model
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        base = ctx.causal_model()
        model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
        batch = ctx.batch(model)
        wrapped = FSDP(model, use_orig_params=use_orig_params, device_id=torch.device("cpu"))
        return ctx.train(wrapped, batch=batch, loss_fn=lambda m, b: m(**b).loss)
    finally:
        dist.destroy_process_group()
        os.environ.pop("MASTER_PORT", None)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("FSDP(..., use_orig_params=True) (accelerate: fsdp_use_orig_params: true)")
def use_orig_params(ctx):
    return _train(ctx, use_orig_params=True)
