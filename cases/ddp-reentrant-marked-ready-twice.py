"""DDP + reentrant checkpointing + LoRA: "Expected to mark a variable ready only once".

With reentrant checkpointing each checkpointed block runs its own backward inside the outer one, so
DDP's reducer sees the same LoRA parameters become ready twice when it is looking for unused
parameters (find_unused_parameters=True). Reproduced with two CPU processes over gloo.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="ddp-reentrant-marked-ready-twice",
    title="DDP + reentrant checkpointing + LoRA: Expected to mark a variable ready only once",
    references=["huggingface/trl#4782", "huggingface/trl#921", "artidoro/qlora#223"],
    tags=["gradient-checkpointing", "lora", "ddp", "distributed", "crash"],
    affected={},
    symptom=Symptom(
        description="RuntimeError: Expected to mark a variable ready only once, in the backward of a DDP-wrapped "
                    "LoRA model with reentrant checkpointing and find_unused_parameters=True",
        message=r"Expected to mark a variable ready only once",
    ),
)


def _rank(rank, world, port, workdir, options):
    import os
    import traceback

    # Leave with os._exit either way: freeing DDP's reducer destroys its gloo process group, whose
    # destructor joins worker threads that can wait on the peer for ever (seen on success and failure).
    try:
        _train_rank(rank, world, port, workdir, options)
    except BaseException:
        with open(os.path.join(workdir, f"rank{rank}.error"), "w") as f:
            f.write(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def _train_rank(rank, world, port, workdir, options):
    import datetime
    import json
    import os

    import torch
    import torch.distributed as dist
    from peft import get_peft_model

    from benchsuite.case import Context

    torch.set_num_threads(1)
    # A timeout on every collective: a rank whose peer died must fail, never wait forever.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    ctx = Context(workdir)
    model = ctx.causal_model()
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": options["reentrant"]})
    model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    model.enable_input_require_grads()
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=options["find_unused"], static_graph=options["static_graph"])
    result = ctx.train(model, steps=2,
                       loss_fn=lambda m, b: ddp(**b).loss)
    if rank == 0:
        with open(os.path.join(workdir, "rank0.json"), "w") as f:
            json.dump(result.summary(), f)
    dist.barrier()  # both ranks have finished their steps before either leaves


def _run(ctx, reentrant=True, find_unused=True, static_graph=False):
    import json
    import os
    import socket

    import torch.multiprocessing as mp

    from benchsuite.case import TrainResult

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {"reentrant": reentrant, "find_unused": find_unused, "static_graph": static_graph}
    try:
        mp.start_processes(_rank, args=(2, port, ctx.workdir, options), nprocs=2, start_method="fork")
    except Exception as exc:
        errors = [open(os.path.join(ctx.workdir, f"rank{r}.error")).read() for r in range(2)
                  if os.path.exists(os.path.join(ctx.workdir, f"rank{r}.error"))]
        raise RuntimeError("\n".join(errors) or str(exc)) from None
    with open(os.path.join(ctx.workdir, "rank0.json")) as f:
        return TrainResult(precomputed=json.load(f))


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
