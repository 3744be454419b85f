"""from_pretrained(..., use_auth_token=...) in code written for transformers 4.x: TypeError in transformers 5.

transformers 4.32 deprecated `use_auth_token` in favour of `token` (huggingface/transformers#24306: "will be
removed in v5") and kept translating it with a FutureWarning. transformers 5 dropped the translation: the
keyword falls through from_pretrained's **kwargs to the model class, and loading fails with
"LlamaForCausalLM.__init__() got an unexpected keyword argument 'use_auth_token'", even for a local
checkpoint that needs no token at all. Libraries that still pass it (tweetnlp, lmqg, ...) break on load.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="use-auth-token-removed",
    title="TypeError: LlamaForCausalLM.__init__() got an unexpected keyword argument 'use_auth_token'",
    references=["cardiffnlp/tweetnlp#34", "asahi417/lm-question-generation#30", "huggingface/transformers#24306"],
    family="api-change",
    tags=["from_pretrained", "api-change", "hub", "crash"],
    affected={"transformers": ">=5.0"},
    symptom=Symptom(description="TypeError naming 'use_auth_token' raised from the model class's __init__ while "
                                "from_pretrained builds the model",
                    exception="TypeError", message=r"unexpected keyword argument 'use_auth_token'"),
)


def _load_and_train(ctx, **auth):
    import os

    from transformers import AutoModelForCausalLM

    path = os.path.join(ctx.workdir, "checkpoint")
    if not os.path.exists(os.path.join(path, "config.json")):
        ctx.causal_model().save_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **auth)  # a local folder: no token is needed at all
    return ctx.train(model, steps=2)


@case.trigger
def trigger(ctx):
    return _load_and_train(ctx, use_auth_token=True)


@case.fix("from_pretrained(..., token=...)")
def token(ctx):
    return _load_and_train(ctx, token=True)


@case.fix("drop the argument (huggingface-cli login / HF_TOKEN supply the token)")
def no_token(ctx):
    return _load_and_train(ctx)
