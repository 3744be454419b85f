"""FSDP: saving under `if is_main_process:` hangs: state_dict() is a collective the other ranks never join.

With FullyShardedDataParallel, model.state_dict() (FULL_STATE_DICT, the default; also
accelerator.get_state_dict / save_state, and PeftModel.save_pretrained on the wrapped model) all-gathers
the shards from every rank. Calling it only on the main process, as one does with DDP, leaves rank 0 in
an all-gather that the other ranks, already waiting at the next barrier or gone, never enter: training
hangs until the collective timeout (NCCL's watchdog: "Watchdog caught collective operation timeout ...
ALLGATHER" after 30+ minutes). Reproduced with two ranks under torchrun (gloo on the CPU, nccl with a GPU
per rank); FSDP gets a process group of its own that trains with the harness's 60 s timeout and whose
timeout is lowered to 2 s after the training step, standing in for the watchdog so the hang ends quickly
(a short timeout from the start would let a rank that lags in FSDP's wrapping or training trip it).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="fsdp-save-main-process-only-hang",
    title="FSDP: model.state_dict()/save_state only on the main process hangs (collective timeout in ALLGATHER)",
    references=["huggingface/accelerate#2000", "huggingface/accelerate#3250", "pytorch/pytorch#143536",
                "huggingface/transformers#35234"],
    family="distributed",
    tags=["fsdp", "distributed", "save", "hang", "crash"],
    affected={},  # FSDP's state_dict is a collective on every torch release
    symptom=Symptom(
        description="rank 0 waits in FSDP's all-gather inside state_dict() until the collective times out; the other "
                    "ranks never take part in it",
        exception="RuntimeError",
        message=r"(?i)timed out|timeout",
    ),
)

SAVE_TIMEOUT_S = 2  # the stand-in for NCCL's watchdog (30 min by default), for the save and what follows


def _train_rank(ctx, every_rank=False, barrier_first=False):
    import datetime
    import functools

    import torch
    import torch.distributed as dist
    from peft import get_peft_model
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    group = dist.new_group(timeout=datetime.timedelta(seconds=60))
    base = ctx.causal_model()
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
    wrapped = FSDP(model, use_orig_params=True, device_id=torch.device(ctx.device), process_group=group,
                   auto_wrap_policy=policy)  # TRANSFORMER_BASED_WRAP, one unit per decoder layer
    batch = {k: v.to(ctx.device) for k, v in ctx.batch(model).items()}
    result = ctx.train(wrapped, batch=batch, steps=1, loss_fn=lambda m, b: m(**b).loss)
    # the ranks leave the training step together (its last collective is the gradients' reduce-scatter)
    dist.distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=SAVE_TIMEOUT_S), group)

    path = f"{ctx.workdir}/fsdp-rank0.pt"
    if barrier_first:  # accelerator.wait_for_everyone() before the save, as in accelerate#2000
        dist.barrier(group=group)
    if every_rank:  # every rank takes part in the gather; only rank 0 writes
        cfg = FullStateDictConfig(offload_to_cpu=ctx.backend == "nccl", rank0_only=True)
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, cfg):
            state_dict = wrapped.state_dict()
        if ctx.rank == 0:
            torch.save(state_dict, path)
    elif ctx.rank == 0:  # as reported: if accelerator.is_main_process: save(model.state_dict())
        torch.save(wrapped.state_dict(), path)
    dist.barrier()  # accelerator.wait_for_everyone() after the save (the default group, 60 s)
    if ctx.rank == 0:
        result.extra["saved_tensors"] = len(torch.load(path, weights_only=True))
    return result


def _run(ctx, **options):
    return ctx.torchrun(_train_rank, nproc=2, **options)


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("call state_dict() on every rank (FSDP.state_dict_type(FULL_STATE_DICT, rank0_only=True)), write on "
          "rank 0 only (trainer.save_model / accelerator.save_state are to be called on every rank)")
def every_rank(ctx):
    return _run(ctx, every_rank=True)


@case.fix("accelerator.wait_for_everyone() before the main-process save", works=False,
          note="a barrier lines the ranks up but the other ranks still skip the all-gather inside state_dict()")
def barrier_first(ctx):
    return _run(ctx, barrier_first=True)
