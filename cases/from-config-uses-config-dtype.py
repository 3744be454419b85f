"""AutoModel.from_config(config) builds the model in the config's torch_dtype: bf16 master weights, silently.

Training from a config (pretraining from scratch, or a model re-initialised from a Hub model's config)
used to build float32 weights whatever `torch_dtype` the config recorded. transformers 4.49 started
honouring the config's dtype in from_config (huggingface/transformers#36567, "torch_dtype is actually used
now?"): a config taken from a bf16 checkpoint now yields a bf16 model, and training it keeps bf16 weights
and a bf16 optimizer state, so small updates are rounded away. llm-foundry pinned float32 explicitly for
this reason. The case reads the config of a checkpoint saved in bf16, builds the model with from_config,
trains 2 AdamW steps at lr 1e-5 and measures the share of weight elements left unchanged.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="from-config-uses-config-dtype",
    title="AutoModelForCausalLM.from_config() now returns a bf16 model when the config says bfloat16: "
          "training keeps bf16 master weights (transformers >= 4.49)",
    references=["huggingface/transformers#36567", "mosaicml/llm-foundry#1734"],
    family="api-change",
    tags=["api-change", "dtype", "bf16", "from_config", "pretraining", "silent"],
    affected={"transformers": ">=4.49"},
    notes="The rounding itself is bf16-weights-updates-vanish (a model the user casts to bf16); here the bf16 weights come from the API change (from_config now follows the checkpoint/config dtype), which the user did not ask for. Measured: ~87% of weight elements unchanged after 2 steps at lr 1e-5 in bf16, ~11% in float32 (embedding rows of unseen tokens).",
    symptom=Symptom(description="from_config builds the model in bfloat16 and most weight elements are unchanged "
                                "after the optimizer steps (updates below bf16 resolution)",
                    observed="updates_rounded_away"),
    fixed_in="not fixed: intended behaviour since 4.49; pass dtype=torch.float32 to from_config",
)


def _config(ctx):
    import os

    import torch
    from transformers import AutoConfig

    path = os.path.join(ctx.workdir, "bf16-checkpoint")
    if not os.path.exists(os.path.join(path, "config.json")):
        ctx.causal_model().to(torch.bfloat16).save_pretrained(path)  # its config.json records bfloat16
    return AutoConfig.from_pretrained(path)


def _train(ctx, from_config_kwargs=None, upcast=False):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(ctx.seed)
    model = AutoModelForCausalLM.from_config(_config(ctx), **(from_config_kwargs or {}))
    if upcast:
        model = model.float()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = ctx.trainer_train(model, ctx.dataset(model, n=4), max_steps=2, learning_rate=1e-5,
                               lr_scheduler_type="constant")
    total = same = 0
    for n, p in model.named_parameters():
        total += p.numel()
        same += int((p.detach() == before[n]).sum())
    frac = same / total
    result.extra.update(param_dtype=str(next(model.parameters()).dtype), unchanged_fraction=round(frac, 4),
                        updates_rounded_away=frac > 0.5)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("from_config(config, dtype=torch.float32) (torch_dtype= before 4.56)")
def float32(ctx):
    import torch
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return _train(ctx, from_config_kwargs={key: torch.float32})


@case.fix("model.float() after from_config")
def upcast(ctx):
    return _train(ctx, upcast=True)
