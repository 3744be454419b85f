"""LoRA + DeepSpeed ZeRO-3 + non-reentrant checkpointing: CheckpointError on recomputed metadata.

ZeRO-3 partitions parameters and gathers them around each forward; the non-reentrant checkpoint's
recompute then sees tensors whose metadata (shape) differ from the forward's. Needs DeepSpeed and a
CUDA GPU; elsewhere it reports skipped.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="zero3-peft-nonreentrant",
    title="LoRA + ZeRO-3 + non-reentrant checkpointing: CheckpointError recomputed values have different metadata",
    references=["huggingface/transformers#47254", "huggingface/trl#2514"],
    family="distributed",
    tags=["gradient-checkpointing", "lora", "deepspeed", "distributed", "crash"],
    affected={"transformers": ">=4.35"},
    requires=["deepspeed"],
    requires_cuda=True,
    symptom=Symptom(
        description="torch.utils.checkpoint.CheckpointError: Recomputed values for the following tensors have "
                    "different metadata than during the forward pass",
        exception="CheckpointError",
        message=r"different metadata than during the forward pass",
    ),
)

ZERO3 = {"zero_optimization": {"stage": 3, "offload_param": {"device": "none"}},
         "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "bf16": {"enabled": True}}


def _train(ctx, reentrant):
    import os

    from peft import get_peft_model

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    model = ctx.causal_model()
    model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    return ctx.trainer_train(model, use_cpu=False, bf16=True, deepspeed=ZERO3, gradient_checkpointing=True,
                             gradient_checkpointing_kwargs={"use_reentrant": reentrant})


@case.trigger
def trigger(ctx):
    return _train(ctx, reentrant=False)


@case.fix("gradient_checkpointing_kwargs={'use_reentrant': True} under ZeRO-3")
def reentrant(ctx):
    return _train(ctx, reentrant=True)
