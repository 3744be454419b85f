"""Old-format remote code on transformers 4.35.0-4.35.2: _set_gradient_checkpointing() got 'enable'.

4.35 moved to _set_gradient_checkpointing(enable=..., gradient_checkpointing_func=...) and called it
that way on every model, including remote code (ChatGLM, Qwen-1) that still overrides the old
_set_gradient_checkpointing(self, module, value=False). 4.36 detects the old signature and falls back.
The model here is benchsuite's own ChatGLM-style remote code (benchsuite/remote/chatglm).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="remote-code-old-checkpointing-enable",
    title="Old-format remote code: _set_gradient_checkpointing() got an unexpected keyword argument 'enable'",
    references=["hiyouga/LlamaFactory#1391", "QwenLM/Qwen#661", "huggingface/transformers#27596"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "remote-code", "crash"],
    affected={"transformers": ">=4.35.0,<4.36"},
    symptom=Symptom(
        description="TypeError: ..._set_gradient_checkpointing() got an unexpected keyword argument 'enable' "
                    "from model.gradient_checkpointing_enable()",
        exception="TypeError",
        message=r"_set_gradient_checkpointing\(\) got an unexpected keyword argument 'enable'",
    ),
    fixed_in="transformers 4.36",
)


def _chatglm(ctx):
    return ctx.chatglm("causal")


@case.trigger
def trigger(ctx):
    model = _chatglm(ctx)
    model.gradient_checkpointing_enable()
    return ctx.train(model)


@case.fix("switch checkpointing on by hand: model.apply(partial(model._set_gradient_checkpointing, value=True))")
def apply_old_api(ctx):
    from functools import partial

    model = _chatglm(ctx)
    model.apply(partial(model._set_gradient_checkpointing, value=True))
    return ctx.train(model)


@case.fix("delete the override from the modeling file (new checkpointing format)")
def drop_old_override(ctx):
    model = _chatglm(ctx)
    for cls in type(model).__mro__:
        if "_set_gradient_checkpointing" in vars(cls) and cls.__module__.startswith("transformers_modules"):
            delattr(cls, "_set_gradient_checkpointing")
    model.gradient_checkpointing_enable()
    return ctx.train(model)
