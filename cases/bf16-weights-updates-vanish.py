"""A model cast to bfloat16 and trained with AdamW: most updates round away, the weights barely move.

bfloat16 keeps 8 bits of mantissa: next to a weight of 1.0 the nearest other values are 1 - 2**-8 and
1 + 2**-7, next to 0.02 they are about 8e-5 away. AdamW moves a weight by roughly the learning rate
per step (1e-5 .. 1e-4 in fine-tuning), so when the weights themselves are bfloat16 (the model loaded
with torch_dtype=torch.bfloat16 or cast with .to(torch.bfloat16), then Trainer(bf16=True)) the
optimizer computes the update and writing it back rounds it to nothing: the norm weights (all 1.0)
never change, most matrix entries neither, and the loss falls much more slowly than in float32. No
warning: bf16=True only autocasts, it does not keep float32 master weights for a bfloat16 model.
The case trains 3 Trainer steps at learning rate 1e-5 and counts the weight entries that changed.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="bf16-weights-updates-vanish",
    title="Model in bfloat16 + Trainer(bf16=True): AdamW updates round to zero, norm weights never change",
    references=["hp-l33/AiM#10", "meta-pytorch/torchtune#2254", "pytorch/pytorch#120376",
                "pytorch/torchdistx#52", "kyegomez/SingLoRA#6"],
    family="mixed-precision",
    tags=["mixed-precision", "bf16", "trainer", "optimizer", "silent"],
    affected={},  # every version: a bfloat16 parameter stores the update in bfloat16
    symptom=Symptom(
        description="after 3 AdamW steps at lr 1e-5 the RMSNorm weights (1.0) are unchanged and most weight "
                    "entries kept their exact value; no warning, the loss just moves less than in float32",
        unchanged=r"norm\.weight$",
        observed="updates_lost",
    ),
    notes="Measured: with a float32 model about 96% of the weight entries move in 3 steps; with the same "
          "model in bfloat16 about 11%, and no norm weight. The same rounding makes LoRA factors in bfloat16 "
          "(peft's autocast_adapter_dtype=False) lose their updates.",
)


def _train(ctx, dtype_name="bfloat16", lr=1e-5):
    import torch

    model = ctx.causal_model().to(getattr(torch, dtype_name))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = ctx.trainer_train(model, bf16=True, learning_rate=lr, max_steps=3,
                               lr_scheduler_type="constant")
    changed = total = 0
    for n, p in model.named_parameters():
        changed += int((p.detach() != before[n]).sum())
        total += p.numel()
    result.extra["fraction_of_entries_changed"] = changed / total
    result.extra["weight_dtype"] = dtype_name
    result.extra["updates_lost"] = changed / total < 0.5
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("keep the weights in float32 and let bf16=True autocast the forward (float32 master weights)")
def fp32_master_weights(ctx):
    return _train(ctx, dtype_name="float32")


@case.fix("raise the learning rate (circulated remedy)", works=False,
          note="an update of 1e-3 is still under half the bfloat16 spacing at 1.0 (2**-8): the norm "
               "weights keep their value")
def higher_lr(ctx):
    return _train(ctx, lr=1e-3)
