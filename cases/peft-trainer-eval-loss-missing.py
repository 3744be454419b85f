"""Trainer.evaluate() on a PeftModel returns no eval_loss unless label_names is given.

The Trainer finds the label arguments from the signature of the model's forward. A plain PeftModel
(no task_type, as for a masked LM, which has no PEFT task type, in the reports) has forward(*args,
**kwargs), hiding the base model's arguments, so no label name is found, the evaluation loop does not compute the
loss, and eval_loss is missing from the metrics (metric_for_best_model="loss", early stopping and
load_best_model_at_end then fail on the missing key). Recent releases log "No label_names provided for
model class `PeftModel`".
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="peft-trainer-eval-loss-missing",
    title="Trainer.evaluate() on a PeftModel: no eval_loss in the metrics (label_names not found)",
    references=["huggingface/transformers#33420", "huggingface/transformers#38130", "huggingface/peft#1881"],
    signs=["no-eval-loss"],  # what its training log shows (doctor --log)
    family="api-change",
    tags=["trainer", "lora", "peft", "evaluation", "silent"],
    affected={"transformers": "<4.55.0"},  # bisected: reproduced at transformers 4.54.1, not-reproduced from 4.55.0 (benchsuite bisect --write)
    symptom=Symptom(description="trainer.evaluate() returns metrics without eval_loss", observed="no_eval_loss"),
    supports_model=True,
    fixed_in="transformers 4.55.0 (the Trainer reads label names from the PeftModel's base model)",
    notes="Range written by `benchsuite bisect --package transformers --from 4.44.0 --to 4.57.6 --write` "
          "(probes: 4.44.0, 4.51.3, 4.53.1, 4.54.0, 4.54.1 reproduced; 4.55.0, 4.55.1, 4.57.6 not). Only a "
          "PeftModel without task_type shows it: PeftModelForCausalLM's forward names labels.",
)


def _train(ctx, **training_args):
    from peft import get_peft_model

    base = ctx.causal_model()
    model = get_peft_model(base, ctx.lora_config(base, None))  # no task type: a plain PeftModel
    data = ctx.dataset(model)
    metrics = {}

    from transformers import TrainerCallback

    class Evaluate(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            seen.update(metrics or {})

    seen = metrics
    import transformers
    from packaging.version import Version

    # the argument's name before 4.41 (and removed later): the scenario runs on either side
    strategy = "eval_strategy" if Version(transformers.__version__) >= Version("4.41") else "evaluation_strategy"
    result = ctx.trainer_train(model, data, trainer_kwargs={"eval_dataset": data}, callbacks=[Evaluate()],
                               eval_steps=3, max_steps=3, **{strategy: "steps"}, **training_args)
    result.extra["no_eval_loss"] = "eval_loss" not in metrics
    result.extra["metrics"] = sorted(metrics)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("TrainingArguments(label_names=['labels'])")
def label_names(ctx):
    return _train(ctx, label_names=["labels"])
