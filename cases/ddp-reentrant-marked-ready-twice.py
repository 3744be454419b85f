"""DDP + reentrant checkpointing + LoRA: "Expected to mark a variable ready only once".

With reentrant checkpointing each checkpointed block runs its own backward inside the outer one, so
DDP's reducer sees the same LoRA parameters become ready twice when it is looking for unused
parameters (find_unused_parameters=True). Reproduced with two ranks under torchrun (gloo on the
CPU; nccl on a node with a GPU per rank).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="ddp-reentrant-marked-ready-twice",
    title="DDP + reentrant checkpointing + LoRA: Expected to mark a variable ready only once",
    references=["huggingface/trl#4782", "huggingface/trl#921", "artidoro/qlora#223"],
    family="distributed",
    tags=["gradient-checkpointing", "lora", "ddp", "distributed", "crash"],
    affected={},
    symptom=Symptom(
        description="RuntimeError: Expected to mark a variable ready only once, in the backward of a DDP-wrapped "
                    "LoRA model with reentrant checkpointing and find_unused_parameters=True",
        message=r"Expected to mark a variable ready only once",
    ),
)


def _train_rank(ctx, reentrant=True, find_unused=True, static_graph=False):
    """One rank: ctx.torchrun(...) runs it on every rank with the process group ready (gloo on the CPU,
    nccl with one GPU per rank: ctx.device)."""
    import torch
    from peft import get_peft_model

    model = ctx.causal_model()
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    model.enable_input_require_grads()
    model.to(ctx.device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=find_unused, static_graph=static_graph,
        device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None)
    batch = {k: v.to(ctx.device) for k, v in ctx.batch(model).items()}
    return ctx.train(model, batch=batch, steps=2, loss_fn=lambda m, b: ddp(**b).loss)


def _run(ctx, **options):
    return ctx.torchrun(_train_rank, nproc=2, **options)   # two ranks under torch.distributed.run


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("gradient_checkpointing_kwargs={'use_reentrant': False}")
def non_reentrant(ctx):
    return _run(ctx, reentrant=False)


@case.fix("DDP(find_unused_parameters=False)")
def no_unused_search(ctx):
    return _run(ctx, find_unused=False)


@case.fix("DDP(static_graph=True)")
def static_graph(ctx):
    return _run(ctx, static_graph=True)
