"""SFTTrainer given a PeftModel (a trained adapter) and a peft_config: the saved adapter cannot rebuild the model.

Continuing from an SFT adapter, users pass the PeftModel and a LoraConfig again. trl up to 0.25 wrapped
the PeftModel a second time (a PeftModel inside a PeftModel, as in trl#926); trl 0.26 merged the first
adapter into the base weights and attached a fresh one, but never saved those merged weights. Either way
training runs, and what trainer.save_model() writes is an adapter relative to a model nobody has: loaded
onto the base model it does not reproduce the trained model (trl#4713: "an adapter that cannot be
reloaded"). trl 0.27 refuses the combination with a ValueError; the scenario then records that refusal
(flag false) instead of raising.

The flag: base model + the saved adapter (PeftModel.from_pretrained) gives logits that differ from the
trained model's on the same batch. Fixes: pass the PeftModel alone (loaded with is_trainable=True) to
keep training the same adapter; or merge_and_unload, save that merged model, and train a new adapter on it.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-sft-peft-model-with-peft-config",
    title="SFTTrainer(model=PeftModel, peft_config=LoraConfig): adapter wrapped twice / merged away, the saved "
          "adapter does not reproduce the trained model",
    references=["huggingface/trl#4713", "huggingface/trl#926"],
    family="rl",
    tags=["trl", "sft", "lora", "peft", "save", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.20"},
    affected={"trl": "<0.27"},  # 0.27 raises ValueError for a PeftModel passed with a peft_config
    fixed_in="trl 0.27.0",
    symptom=Symptom(description="the adapter the trainer saved, loaded onto the base model, gives other logits "
                                "than the model that was trained",
                    observed="saved_adapter_mismatch"),
)


def _train(ctx, mode="both"):
    import os

    import torch
    from datasets import Dataset
    from peft import PeftModel
    from trl import SFTConfig, SFTTrainer

    adapter = ctx.saved_adapter()  # the first (SFT) adapter, trained before
    base_path = None
    if mode == "merged":  # merge the first adapter, save that model, train a new adapter on it
        base_path = os.path.join(ctx.workdir, "merged")
        if not os.path.exists(base_path):
            PeftModel.from_pretrained(ctx.text_model(), adapter).merge_and_unload().save_pretrained(base_path)
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM
        merged = AutoModelForCausalLM.from_pretrained(base_path)
        # wrapped here rather than through peft_config, so that the trainable parameters are known up front
        model = get_peft_model(merged, ctx.lora_config(merged, "CAUSAL_LM", r=4))
    else:
        model = PeftModel.from_pretrained(ctx.text_model(), adapter, is_trainable=True)
    peft_config = ctx.lora_config(model, "CAUSAL_LM", r=4) if mode == "both" else None
    out = os.path.join(ctx.workdir, f"saved-{mode}")
    held = {}

    class Saving(SFTTrainer):  # the user's script: train, then trainer.save_model()
        def train(self, *args, **kwargs):
            output = super().train(*args, **kwargs)
            self.save_model(out)
            held["model"] = self.model
            return output

    data = Dataset.from_dict({"text": ctx.sentences(8, words=6)})
    try:
        result = ctx.trl_train(Saving, SFTConfig, model, data, trainer_kwargs={"peft_config": peft_config},
                               max_steps=2)
    except ValueError as e:  # trl >= 0.27
        if "together with a" not in str(e):
            raise
        return ctx.observed(saved_adapter_mismatch=False, refused=str(e)[:200])
    trained = held["model"].eval()
    if base_path is not None:
        from transformers import AutoModelForCausalLM
        rebuilt_base = AutoModelForCausalLM.from_pretrained(base_path)
    else:
        rebuilt_base = ctx.text_model()
    rebuilt = PeftModel.from_pretrained(rebuilt_base, out).eval()
    ids = torch.tensor([[5, 9, 13, 17, 21, 25]])
    with torch.no_grad():
        diff = (trained(input_ids=ids).logits - rebuilt(input_ids=ids).logits).abs().max().item()
    result.extra["max_logit_diff"] = diff
    result.extra["saved_adapter_mismatch"] = diff > 1e-4
    result.extra["trained_class_nesting"] = type(getattr(trained.base_model, "model", None)).__name__
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("pass the PeftModel (is_trainable=True) without a peft_config: keep training the same adapter")
def peft_model_only(ctx):
    return _train(ctx, mode="peft_model_only")


@case.fix("merge_and_unload(), save the merged model, train a new adapter on it")
def merged(ctx):
    return _train(ctx, mode="merged")
