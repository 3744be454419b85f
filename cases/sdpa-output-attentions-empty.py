"""output_attentions=True on a model loaded with the default SDPA attention: no attention weights come back.

transformers 4.x's SDPA attention fell back to the eager implementation for output_attentions=True (with a
warning) and returned the weights. From transformers 4.53, SDPA logs "`sdpa` attention does not support
`output_attentions=True`" and the model returns an empty attentions tuple: code that reads attention maps
(interpretability, alignment, attention-based distillation or losses) gets nothing, or an IndexError later.
Loading with attn_implementation="eager" gives the weights back.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="sdpa-output-attentions-empty",
    title="attn_implementation='sdpa' + output_attentions=True: '`sdpa` attention does not support "
          "`output_attentions=True`', no attention weights returned",
    references=["sillsdev/machine.py#150", "transformerlab/transformerlab-api#547", "MeiGen-AI/MultiTalk#54"],
    family="attention",
    tags=["attention", "sdpa", "interpretability", "silent"],
    # bisected (benchsuite bisect --from 4.46.3 --to 5.0.0 --write): not-reproduced at transformers 4.52.4,
    # reproduced from 4.53.0 (the first guess, >=4.48, was wrong for 4.50.2-4.52.4)
    affected={"transformers": ">=4.53.0"},
    symptom=Symptom(description="the model returns no attention weights for output_attentions=True (an empty or "
                                "missing attentions tuple); transformers logs that sdpa does not support it",
                    observed="no_attentions"),
    fixed_in="",
)


def _attentions(ctx, implementation=None):
    import torch

    from benchsuite.models import tiny_llama
    kwargs = {"attn_implementation": implementation} if implementation else {"attn_implementation": "sdpa"}
    model = tiny_llama("causal", seed=ctx.seed, **kwargs)
    model.eval()
    batch = ctx.batch(model, task="none")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    attentions = [a for a in (out.attentions or ()) if a is not None]
    return ctx.observed(no_attentions=len(attentions) == 0, layers=model.config.num_hidden_layers,
                        attention_tensors=len(attentions),
                        implementation=str(getattr(model.config, "_attn_implementation", None)))


@case.trigger
def trigger(ctx):
    return _attentions(ctx)


@case.fix("load the model with attn_implementation='eager' where attention weights are needed")
def eager(ctx):
    return _attentions(ctx, "eager")
