"""DPOTrainer given a ref_model and a peft_config: ValueError "You passed both a ref_model and a peft_config".

Tutorials loaded a second copy of the model as ref_model and also passed a LoraConfig. trl 0.7.11
(trl#1289) made that an error: with a LoRA policy the reference is the same model with its adapters
disabled, so the copy only costs memory. trl 0.8 added force_use_ref_model=True to keep a different
reference on purpose (trl#1365). The error kept hitting scripts (MedicalGPT#334, alignment-handbook#224,
llm-course#44) until trl 0.28 made force_use_ref_model default to "a ref_model was passed"; the DPO
refactor of trl 0.29 dropped the option and accepts both.

Fixes: ref_model=None (the reference is the policy with its adapters disabled); or wrap the model with
get_peft_model yourself and pass that PeftModel with the ref_model (the check looked at peft_config only).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-dpo-ref-model-with-peft-config",
    title="DPOTrainer(ref_model=..., peft_config=LoraConfig(...)): ValueError You passed both a ref_model and a "
          "peft_config",
    references=["shibing624/MedicalGPT#334", "huggingface/alignment-handbook#224", "mlabonne/llm-course#44",
                "huggingface/trl#1365", "huggingface/trl#1289"],
    family="rl",
    tags=["trl", "dpo", "preference", "lora", "peft", "reference-model", "crash"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.12"},  # processing_class (ctx.trl_train); the check itself exists since 0.7.11
    affected={"trl": "<0.28"},  # 0.28: force_use_ref_model defaults to True when a ref_model is given
    fixed_in="trl 0.28.0",
    symptom=Symptom(description="ValueError in DPOTrainer.__init__: a ref_model and a peft_config were both passed",
                    exception="ValueError", message=r"passed (both )?a ref_model and a peft_config"),
)


def _train(ctx, ref=True, wrap_yourself=False):
    from datasets import Dataset
    from peft import get_peft_model
    from trl import DPOConfig, DPOTrainer

    model = ctx.text_model()
    lora = ctx.lora_config(model, "CAUSAL_LM")
    kwargs = {"ref_model": ctx.text_model()} if ref else {}
    if wrap_yourself:  # also for ref_model=None: the same get_peft_model call the trainer makes for a
        model = get_peft_model(model, lora)  # peft_config, so the trainable (LoRA) parameters are known up front
    else:
        kwargs["peft_config"] = lora
    data = Dataset.from_dict({"prompt": ctx.sentences(8, words=4), "chosen": ctx.sentences(8, 3, seed_offset=1),
                              "rejected": ctx.sentences(8, 3, seed_offset=2)})
    return ctx.trl_train(DPOTrainer, DPOConfig, model, data, trainer_kwargs=kwargs, max_length=16)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("ref_model=None: the reference is the LoRA policy with its adapters disabled")
def no_ref_model(ctx):
    return _train(ctx, ref=False, wrap_yourself=True)


@case.fix("wrap with get_peft_model yourself and pass that PeftModel together with the ref_model")
def peft_model_and_ref(ctx):
    return _train(ctx, wrap_yourself=True)
