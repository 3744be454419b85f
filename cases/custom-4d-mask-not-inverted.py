"""A custom 4D attention mask written as 1 = attend, 0 = masked: transformers adds it to the scores, nothing is masked.

A 4D attention_mask of shape (batch, 1, query, key) lets a fine-tuning script pack several examples into one row
with a block-diagonal mask, or use any other attention pattern. Its convention changed under the users' feet:
transformers 4.39-4.40 took it in the 2D mask's convention (1 = attend, 0 = masked) and inverted it; 4.41-4.43
raised "Custom 4D attention mask should be passed in inverted form with max==0" (transformers PR #30348); from
4.44 the check is gone and the mask is used as given, as an *additive* float mask (0 = attend, a large negative
number = masked; a bool mask is used as is by sdpa). A 0/1 float mask then adds 1 to the scores it should keep
and 0 to those it should mask: every position stays visible. Fine-tuning runs, the loss falls, and the packed
examples attend to each other (transformers#32195, from a pipeline that worked on 4.40; transformers#46458 asks
for a warning on such masks, and got documentation of the expected form instead). A bool mask works with sdpa
but not with eager, which adds the mask to the scores as floats (checked on 5.25.0): the additive form works
with both.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="custom-4d-mask-not-inverted",
    title="Custom 4D attention mask with 1 = attend / 0 = masked: used as an additive mask, nothing is masked",
    references=["huggingface/transformers#32195", "huggingface/transformers#46458"],
    family="attention",
    tags=["attention", "sdpa", "4d-mask", "packing", "silent"],
    # 4.38 ignores a 4D mask in Llama, 4.39-4.40 invert a 0/1 one, 4.41-4.43 raise a ValueError for it (bisect --from
    # 4.41.0: every release 4.41.0-4.43.3 raises); from 4.44 it is used as an additive mask
    applies={"transformers": ">=4.44"},
    # bisected (benchsuite bisect --package transformers --from 4.44.0 --write): reproduced at 4.44.0 and 5.25.0
    affected={},
    symptom=Symptom(
        description="with a block-diagonal 4D mask in the 1/0 convention, the second example of a packed row still "
                    "attends to the first: its logits differ from its logits alone",
        observed="mask_ignored",
    ),
)


def _batch(ctx, form):
    import torch

    tokenizer = ctx.tokenizer()
    a, b = (tokenizer(s + " <eos>")["input_ids"] for s in ctx.sentences(2, words=6))
    n = len(a) + len(b)
    keep = torch.zeros(n, n, dtype=torch.bool)  # block-diagonal causal: each example sees only itself
    keep[:len(a), :len(a)] = True
    keep[len(a):, len(a):] = True
    keep &= torch.tril(torch.ones(n, n, dtype=torch.bool))
    if form == "ones_zeros":  # the 2D mask's convention, as the user wrote it
        mask = keep.float()
    elif form == "additive":  # 0 where attended, the dtype's minimum where masked
        mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min)
    else:                     # torch.bool, True = attend
        mask = keep
    ids = torch.tensor([a + b])
    batch = {"input_ids": ids, "attention_mask": mask[None, None], "labels": ids.clone(),
             "position_ids": torch.tensor([list(range(len(a))) + list(range(len(b)))])}
    return batch, len(a), b


def _train(ctx, form="ones_zeros"):
    import torch

    model = ctx.text_model(attn_implementation="sdpa")
    batch, first, second = _batch(ctx, form)
    model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        in_row = model(**inputs, use_cache=False).logits[0, first:]
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
    drift = float((in_row - alone).abs().max())
    result = ctx.train(model, batch=batch)
    result.extra.update(mask_ignored=drift > 1e-4, second_example_max_logit_drift=drift)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("build the 4D mask in the additive form: 0.0 where attended, torch.finfo(dtype).min where masked")
def additive(ctx):
    return _train(ctx, form="additive")


@case.fix("pass the 4D mask as torch.bool (True = attend) with sdpa")
def bool_mask(ctx):
    return _train(ctx, form="bool")
