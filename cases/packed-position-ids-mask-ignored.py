"""Padding-free packed rows with restarting position_ids *and* an attention_mask of ones: sdpa/eager ignore the
boundaries, the packed examples attend to each other.

Padding-free training concatenates several examples into one row and marks where each starts by restarting
position_ids at 0. Flash attention turns those boundaries into varlen segments. The sdpa and eager paths only
build a block-diagonal mask from position_ids (transformers PR #39194, 4.54) when the batch has *no*
attention_mask (and no cache): a collator or a packing pipeline that keeps the usual all-ones attention_mask
(TRL's collators returned both, trl#3997; verl-style `use_remove_padding`, transformers#46634) switches the
detection off, sdpa runs plain causal attention over the whole row and every example attends to the ones
packed before it. The loss goes down as usual; nothing warns. Before 4.54 no sdpa/eager path looked at
position_ids at all. Measured with use_cache=False, as the Trainer runs the model (a cache also disables the
detection). Switching to attn_implementation="eager", as is often suggested for attention trouble, changes
nothing: both read the same mask.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="packed-position-ids-mask-ignored",
    title="Padding-free packing with position_ids and an all-ones attention_mask: sdpa/eager attend across the "
          "packed examples",
    references=["huggingface/transformers#46634", "huggingface/trl#3997"],
    family="attention",
    tags=["attention", "sdpa", "packing", "padding-free", "silent"],
    # bisected (benchsuite bisect --package transformers --from 4.36.0 --write): reproduced at 4.36.0 and 5.25.0, no
    # status change; no release builds the packed mask when an attention_mask is given
    affected={},
    symptom=Symptom(
        description="the logits of the second example of a packed row (position_ids restart at its first token) "
                    "differ from its logits alone: it attends to the example packed before it",
        observed="cross_contamination",
    ),
)


def _rows(ctx, keep_mask):
    import torch

    tokenizer = ctx.tokenizer()
    ex = [tokenizer(s + " <eos>")["input_ids"] for s in ctx.sentences(4, words=6)]
    rows = []
    for a, b in ((ex[0], ex[1]), (ex[2], ex[3])):
        ids = torch.tensor(a + b)
        row = {"input_ids": ids, "labels": ids.clone(),
               "position_ids": torch.tensor(list(range(len(a))) + list(range(len(b))))}
        if keep_mask:  # the collator also returns the usual attention_mask: ones over the packed row
            row["attention_mask"] = torch.ones_like(ids)
        rows.append(row)
    return rows, ex


def _train(ctx, keep_mask=True, implementation="sdpa"):
    import torch

    model = ctx.text_model(attn_implementation=implementation)
    rows, ex = _rows(ctx, keep_mask)
    first, second = len(ex[0]), ex[1]
    probe = {k: v.unsqueeze(0) for k, v in rows[0].items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        in_row = model(**probe, use_cache=False).logits[0, first:first + len(second)]
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
    model.train()
    drift = float((in_row - alone).abs().max())
    result = ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=2)
    result.extra.update(cross_contamination=drift > 1e-4, second_example_max_logit_drift=drift)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("drop the attention_mask from padding-free batches: position_ids alone (DataCollatorWithFlattening's "
          "output); sdpa and eager then build the block-diagonal mask", applies={"transformers": ">=4.54"})
def position_ids_only(ctx):
    return _train(ctx, keep_mask=False)


@case.fix("load the model with attn_implementation='eager'", works=False,
          note="eager builds its mask in the same place as sdpa: the all-ones mask switches the detection off "
               "there too")
def eager(ctx):
    return _train(ctx, implementation="eager")
