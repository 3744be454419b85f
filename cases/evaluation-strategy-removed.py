"""TrainingArguments(evaluation_strategy=...) in code written for older transformers: TypeError.

transformers renamed the argument to eval_strategy (4.41) and removed the old name in 4.51.0 (bisected
over 4.46.3..4.57.6 by `benchsuite bisect --write`: 4.50.3 accepts it, 4.51.0 raises), so scripts,
course notebooks and repositories written before that fail when TrainingArguments is built.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="evaluation-strategy-removed",
    title="TypeError: TrainingArguments.__init__() got an unexpected keyword argument 'evaluation_strategy'",
    references=["huggingface/course#987", "huggingface/transformers#7974"],
    family="api-change",
    tags=["trainer", "api-change", "crash"],
    affected={"transformers": ">=4.51.0"},
    applies={"transformers": ">=4.41"},  # eval_strategy, the fix, exists from 4.41
    symptom=Symptom(description="TypeError naming 'evaluation_strategy' when TrainingArguments is built",
                    exception="TypeError", message=r"evaluation_strategy"),
)


def _train(ctx, **strategy):
    model = ctx.causal_model()
    data = ctx.dataset(model)
    return ctx.trainer_train(model, data, trainer_kwargs={"eval_dataset": data}, eval_steps=1, **strategy)


@case.trigger
def trigger(ctx):
    return _train(ctx, evaluation_strategy="steps")


@case.fix("TrainingArguments(eval_strategy=...)")
def eval_strategy(ctx):
    return _train(ctx, eval_strategy="steps")
