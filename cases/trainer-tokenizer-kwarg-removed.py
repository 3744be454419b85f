"""Trainer(tokenizer=...) in code written for transformers 4.x: TypeError in transformers 5.

transformers 4.46 renamed the Trainer's `tokenizer` argument to `processing_class` (huggingface/transformers#32385)
and kept the old name as a deprecated alias with a warning; transformers 5 removed it, so course
notebooks, tutorials and fine-tuning repositories that pass `tokenizer=` fail as the Trainer is built
(the OntoLearner and trl reports quote transformers 5.x). The trigger passes the word-level tokenizer
as `tokenizer=` to a plain Trainer on a causal LM (DataCollatorWithPadding needs it); the fix passes it
as `processing_class=`.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trainer-tokenizer-kwarg-removed",
    title="TypeError: Trainer.__init__() got an unexpected keyword argument 'tokenizer'",
    references=["sciknoworg/OntoLearner#347", "huggingface/trl#6168", "huggingface/hub-docs#1711",
                "huggingface/transformers#32385"],
    family="api-change",
    tags=["trainer", "api-change", "tokenizer", "crash"],
    affected={"transformers": ">=5.0"},
    applies={"transformers": ">=4.46"},  # processing_class, the fix, exists from 4.46
    symptom=Symptom(description="TypeError naming 'tokenizer' when the Trainer is built",
                    exception="TypeError", message=r"unexpected keyword argument 'tokenizer'"),
)


def _train(ctx, **processing):
    from transformers import DataCollatorWithPadding

    tokenizer = ctx.tokenizer()
    model = ctx.text_model()
    rows = [dict(tokenizer(s)) for s in ctx.sentences(8, words=6)]
    for row in rows:
        row["labels"] = list(row["input_ids"])
    kwargs = {"data_collator": DataCollatorWithPadding(tokenizer), **processing}
    return ctx.trainer_train(model, rows, trainer_kwargs=kwargs, max_steps=2)


@case.trigger
def trigger(ctx):
    return _train(ctx, tokenizer=ctx.tokenizer())


@case.fix("Trainer(processing_class=tokenizer)")
def processing_class(ctx):
    return _train(ctx, processing_class=ctx.tokenizer())
