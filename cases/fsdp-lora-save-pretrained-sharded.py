"""FSDP + LoRA: save_pretrained() on the wrapped PeftModel writes the rank's flat shard, not the adapter.

Under FullyShardedDataParallel (use_orig_params=True, the setting LoRA needs) every original parameter is,
outside forward/backward, a view into this rank's shard of the FlatParameter: 1-D, and empty on the ranks
that do not own that slice. PeftModel.save_pretrained() reads model.state_dict() of the inner module, so
it writes those views: adapter_model.safetensors holds lora_A/lora_B tensors of shape (512,) on rank 0 and
(0,) on rank 1 instead of (8, 64)/(64, 8). Nothing fails when saving (peft >= 0.19 only warns); loading
the adapter later fails with a size mismatch, or a server (vLLM) crashes on the 1-D tensors. Reproduced
with two ranks under torchrun (gloo on the CPU, nccl with a GPU per rank). The fixes gather the full
parameters first: a FULL_STATE_DICT state_dict passed to save_pretrained(state_dict=...), or
summon_full_params around the save.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="fsdp-lora-save-pretrained-sharded",
    title="FSDP + LoRA: save_pretrained writes flattened 1-D / empty lora_A/lora_B shards (size mismatch on load)",
    references=["huggingface/peft#3251", "huggingface/transformers#34080", "huggingface/accelerate#2032"],
    family="distributed",
    tags=["lora", "fsdp", "distributed", "save", "silent"],
    affected={},  # a usage pattern: every torch/peft version writes the local shard
    symptom=Symptom(
        description="the adapter saved on rank 0 under FSDP has lora_A/lora_B tensors whose shapes are not the "
                    "adapter's (flattened 1-D shard, or empty), so PeftModel.from_pretrained cannot load it",
        observed="saved_adapter_incomplete",
    ),
    notes="peft 0.19+ (huggingface/peft#3251) warns 'LoRA tensor(s) have invalid shape' when saving such a state "
          "dict; the file is still written. The saved shapes and the load error are kept in extra.",
)


def _train_rank(ctx, gather=None):
    import os

    import torch
    from peft import PeftModel, get_peft_model
    from safetensors.torch import load_file
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    base = ctx.causal_model()
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
    expected = {n: tuple(p.shape) for n, p in model.named_parameters() if "lora_" in n}
    wrapped = FSDP(model, use_orig_params=True, device_id=torch.device(ctx.device))
    batch = {k: v.to(ctx.device) for k, v in ctx.batch(model).items()}
    opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # train a little: the adapter is not at its initialisation
        wrapped(**batch).loss.backward()
        opt.step()
        opt.zero_grad()

    path = os.path.join(ctx.workdir, f"adapter-{gather or 'plain'}")
    if gather == "full_state_dict":  # every rank takes part in the gather; rank 0 writes
        # offload_to_cpu=True is the usual advice on GPUs; with the ranks on the CPU (gloo) torch 2.13's
        # offload path crashes the rank (SIGSEGV), and the tensors are on the CPU already
        cfg = FullStateDictConfig(offload_to_cpu=ctx.backend == "nccl", rank0_only=True)
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, cfg):
            state_dict = wrapped.state_dict()
        if ctx.rank == 0:
            model.save_pretrained(path, state_dict=state_dict)
    elif gather == "summon_full_params":
        with FSDP.summon_full_params(wrapped, writeback=False, rank0_only=False):
            if ctx.rank == 0:
                model.save_pretrained(path)
    elif ctx.rank == 0:  # as reported: save the PeftModel on the main process
        model.save_pretrained(path)
    torch.distributed.barrier()
    if ctx.rank != 0:
        return None

    saved = load_file(os.path.join(path, "adapter_model.safetensors"))
    saved_shapes = {k: tuple(v.shape) for k, v in saved.items()}
    # saved keys drop the adapter name: ...q_proj.lora_A.weight for ...q_proj.lora_A.default.weight
    want = {n.replace(".default", ""): s for n, s in expected.items()}
    wrong = sorted(k for k, s in want.items() if saved_shapes.get(k) != s)
    load_error = None
    try:
        PeftModel.from_pretrained(ctx.causal_model(), path)
    except Exception as exc:  # the user's later load: size mismatch for ...lora_A...
        load_error = f"{type(exc).__name__}: {str(exc)[:300]}"
    return ctx.observed(saved_adapter_incomplete=bool(wrong), wrong_shapes=len(wrong), lora_tensors=len(want),
                        example={k: [list(saved_shapes.get(k, ())), list(want[k])] for k in wrong[:2]},
                        load_error=load_error)


def _run(ctx, **options):
    return ctx.torchrun(_train_rank, nproc=2, **options)


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("gather a FULL_STATE_DICT (FSDP.state_dict_type(..., FULL_STATE_DICT)) on every rank, then "
          "save_pretrained(path, state_dict=state_dict) on rank 0")
def full_state_dict(ctx):
    return _run(ctx, gather="full_state_dict")


@case.fix("save inside FSDP.summon_full_params(model, writeback=False)")
def summon_full_params(ctx):
    return _run(ctx, gather="summon_full_params")
