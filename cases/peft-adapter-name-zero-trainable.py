"""get_peft_model(..., adapter_name="...") with a name other than "default": trainable params 0 (peft < 0.8).

Before peft 0.8.0 the adapter created under a custom name was not marked trainable: the model
reported "trainable params: 0" and the optimizer had nothing to train. The reporter says 0.8.0 fixed it.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="peft-adapter-name-zero-trainable",
    title="get_peft_model(model, config, adapter_name='abc'): trainable params 0",
    references=["huggingface/peft#1410", "huggingface/peft#1346"],
    tags=["lora", "peft"],
    affected={"peft": "<0.8"},
    fixed_in="peft 0.8.0",
    symptom=Symptom(description="no parameter requires grad after get_peft_model with a custom adapter name",
                    no_trainable=True),
    supports_model=True,
)


def _train(ctx, **kwargs):
    from peft import get_peft_model

    model = ctx.causal_model()
    return ctx.train(get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"), **kwargs))


@case.trigger
def trigger(ctx):
    return _train(ctx, adapter_name="abc")


@case.fix("the default adapter name")
def default_name(ctx):
    return _train(ctx)
