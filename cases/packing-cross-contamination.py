"""Packed SFT examples share one attention row: later examples attend to earlier, unrelated ones.

Packing concatenates several tokenized examples (separated by EOS) into one training row to avoid
padding. Done as TRL's ConstantLengthDataset and many SFT scripts did it (one row, attention_mask all
ones, positions 0..L-1), causal attention lets every token of the second example attend to the whole
first example: the model is trained on contexts it will never see at inference. Nothing warns; the
loss even looks better. Separating the examples needs their boundaries in the batch: position_ids that
restart at 0 (DataCollatorWithFlattening, TRL's padding_free / packing_strategy="bfd"), which flash
attention and, in recent transformers, the eager/sdpa mask builders turn into a block-diagonal mask.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="packing-cross-contamination",
    title="Naive packing (concatenated examples, attention_mask of ones): examples attend to each other",
    references=["huggingface/trl#1230", "huggingface/transformers#25452", "huggingface/trl#805",
                "unslothai/unsloth#126"],
    family="data",
    tags=["data", "packing", "attention", "sft", "silent"],
    affected={},  # an all-ones mask over a concatenation is causal attention across examples in every release
    symptom=Symptom(
        description="the logits of the second example of a packed row differ from its logits alone: "
                    "it attends to the first example",
        observed="cross_contamination",
    ),
    notes="Measured with use_cache=False, as the Trainer runs the model (transformers 5 sets it from "
          "TrainingArguments.use_cache); eager/sdpa only derive the block-diagonal mask from position_ids when "
          "no attention_mask and no cache are given.",
)


def _examples(ctx, tokenizer):
    return [tokenizer(s + " <eos>")["input_ids"] for s in ctx.sentences(4, words=6)]


def _second_example_drift(model, batch, first_len, second):
    """Max |logit difference| of the second example of row 0 between the training batch and alone."""
    import torch

    model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        in_batch = model(**inputs, use_cache=False).logits[0, first_len:first_len + len(second)]
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
    model.train()
    return float((in_batch - alone).abs().max())


def _train(ctx, layout="naive"):
    import torch
    from transformers import DataCollatorForSeq2Seq

    tokenizer = ctx.tokenizer()
    model = ctx.text_model(attn_implementation="sdpa")
    ex = _examples(ctx, tokenizer)
    if layout == "naive":        # the reported packing: examples concatenated into one row, mask of ones
        rows = []
        for a, b in ((ex[0], ex[1]), (ex[2], ex[3])):
            ids = torch.tensor(a + b)
            rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
        collator = None
        probe = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    elif layout == "flattening":  # position_ids restart at every example, no attention_mask
        from transformers import DataCollatorWithFlattening

        rows = [{"input_ids": e} for e in ex]
        collator = DataCollatorWithFlattening()
        probe = {k: torch.as_tensor(v) for k, v in collator(rows).items()}
    else:                         # no packing: one example per row, right padding
        rows = [{"input_ids": e, "attention_mask": [1] * len(e), "labels": list(e)} for e in ex]
        collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
        probe = dict(collator(rows))
        probe = {k: v[1:2] for k, v in probe.items()}  # the second example sits alone in its row
    first_len = 0 if layout == "padded" else len(ex[0])
    drift = _second_example_drift(model, probe, first_len, ex[1])
    result = ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4 if layout != "naive" else 2,
                               trainer_kwargs={"data_collator": collator} if collator else None)
    result.extra.update(cross_contamination=drift > 1e-4, second_example_max_logit_drift=drift)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("DataCollatorWithFlattening (position_ids restart per example; TRL padding_free / packing_strategy='bfd')",
          applies={"transformers": ">=5.25"},
          note="checked: separates the examples on 5.25.0 (eager/sdpa build the block mask from position_ids); "
               "on 4.52.4 and 4.53.0 sdpa still attends across them (only flash attention honours position_ids "
               "there). The first release in between that works was not bisected.")
def flattening(ctx):
    return _train(ctx, layout="flattening")


@case.fix("no packing: one example per row, padded (DataCollatorForSeq2Seq)")
def no_packing(ctx):
    return _train(ctx, layout="padded")
