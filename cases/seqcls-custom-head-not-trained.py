"""LoRA SEQ_CLS on a model whose head is not named "classifier" or "score": the head stays random.

peft's sequence-classification wrapper makes the head trainable by guessing its name ("classifier",
"score"). A head named otherwise (ChatGLM's classifier_head) stays frozen at its random
initialisation: the reward model trains its adapters against a head that never learns, and saving
the adapter loses the head. Here on benchsuite's ChatGLM-style remote code, with its forward patched
to accept peft's extra keyword arguments (see chatglm-seqcls-output-attentions).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="seqcls-custom-head-not-trained",
    title="LoRA task_type=SEQ_CLS with a head not named classifier/score: the head stays frozen at random init",
    references=["huggingface/peft#876", "huggingface/peft#1070"],
    family="save-load-merge",
    tags=["lora", "peft", "reward-model", "remote-code", "silent"],
    affected={},
    symptom=Symptom(
        description="after get_peft_model(task_type=SEQ_CLS) the classification head has requires_grad=False "
                    "and never changes",
        observed="head_frozen",
    ),
)


def _train(ctx, modules_to_save=None):
    import inspect

    from peft import get_peft_model

    model = ctx.chatglm("seq_cls")
    cls = type(model)
    original = cls.forward
    accepted = set(inspect.signature(original).parameters)
    cls.forward = lambda self, *a, **kw: original(self, *a, **{k: v for k, v in kw.items() if k in accepted})
    lora = ctx.lora_config(model, "SEQ_CLS", target_modules=["query_key_value"], modules_to_save=modules_to_save)
    model = get_peft_model(model, lora)
    head = [p for n, p in model.named_parameters() if "classifier_head" in n]
    before = [p.detach().clone() for p in head]
    result = ctx.train(model, task="seq_cls")
    moved = any(not (b == p.detach()).all() for b, p in zip(before, head))
    result.extra["head_frozen"] = not any(p.requires_grad for p in head) and not moved
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("modules_to_save=['classifier_head']")
def modules_to_save(ctx):
    return _train(ctx, modules_to_save=["classifier_head"])
