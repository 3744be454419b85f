"""LoRA target_modules copied from a Llama recipe onto ChatGLM: "Target modules ... not found".

ChatGLM names its attention projection query_key_value; q_proj/v_proj exist only in Llama-style
models. The model here is benchsuite's own ChatGLM-style remote code.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="target-modules-mismatch",
    title="LoRA with Llama target modules on ChatGLM: ValueError Target modules {...} not found in the base model",
    references=["hiyouga/LlamaFactory#1412", "hiyouga/LlamaFactory#5368", "tdrussell/qlora-pipe#61"],
    family="api-change",
    tags=["lora", "peft", "remote-code", "crash"],
    affected={},
    symptom=Symptom(
        description="ValueError: Target modules {'q_proj', 'v_proj'} not found in the base model",
        exception="ValueError",
        message=r"Target modules .* not found in the base model",
    ),
)


def _train(ctx, targets):
    from peft import LoraConfig, get_peft_model

    model = ctx.chatglm("causal")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
    return ctx.train(model)


@case.trigger
def trigger(ctx):
    return _train(ctx, ["q_proj", "v_proj"])


@case.fix("target_modules=['query_key_value'] (ChatGLM's own names)")
def chatglm_names(ctx):
    return _train(ctx, ["query_key_value"])


@case.fix("target_modules='all-linear'", applies={"peft": ">=0.8.0"})
def all_linear(ctx):
    return _train(ctx, "all-linear")
