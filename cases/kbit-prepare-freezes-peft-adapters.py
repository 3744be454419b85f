"""prepare_model_for_kbit_training() applied to a model that already has its LoRA adapter: nothing trains.

prepare_model_for_kbit_training freezes every parameter of the model it is given (its docstring says
so since peft#2305). Called on a PeftModel, after get_peft_model or PeftModel.from_pretrained, it
freezes the adapters too, and the optimizer gets an empty parameter list. trl's SFTTrainer did this
itself for a QLoRA PeftModel (trl#3926, fixed by trl PR #4081); that path needs a 4-bit model and a
GPU, so this case runs the call it makes, on a float32 model.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="kbit-prepare-freezes-peft-adapters",
    title="prepare_model_for_kbit_training() on a PeftModel freezes the LoRA weights: trainable params 0",
    references=["huggingface/transformers#26098", "huggingface/trl#3926"],
    family="quantization",
    tags=["lora", "peft", "qlora", "silent"],
    affected={},  # every peft version: the function freezes all parameters by design
    symptom=Symptom(
        description="after prepare_model_for_kbit_training(peft_model) no parameter requires grad",
        no_trainable=True,
    ),
    supports_model=True,
)


def _train(ctx, prepare_first):
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = ctx.causal_model()
    if prepare_first:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))
    if not prepare_first:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return ctx.train(model)


@case.trigger
def trigger(ctx):
    return _train(ctx, prepare_first=False)


@case.fix("call prepare_model_for_kbit_training on the base model, then get_peft_model")
def prepare_first(ctx):
    return _train(ctx, prepare_first=True)
