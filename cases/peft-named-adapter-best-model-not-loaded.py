"""load_best_model_at_end with a PEFT adapter that is not named "default": the best adapter is never loaded.

PeftModel.save_pretrained writes an adapter named other than "default" into a sub-folder
(checkpoint-N/<adapter_name>/adapter_model.safetensors). Trainer._load_best_model looks for the
adapter file only at the top of the best checkpoint, finds nothing there, logs "Could not locate the
best model at .../pytorch_model.bin, if you are running a distributed training on multiple nodes, you
should activate --save_on_each_node" and keeps the weights of the last step. The run reports the best
checkpoint's metric while the model in memory (and whatever is saved from it next) is the last one.

The case trains a LoRA adapter named "sft" for 4 steps on 4 rows, evaluating and saving every 2 steps
on other rows, so the eval loss is lowest at step 2 (over-fitting), and compares the adapter in memory
after training with the best checkpoint's.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="peft-named-adapter-best-model-not-loaded",
    title="load_best_model_at_end with a named PEFT adapter: 'Could not locate the best model', last adapter kept",
    references=["huggingface/transformers#36201"],
    family="resume",
    tags=["trainer", "lora", "peft", "load-best-model", "silent"],
    affected={},  # every release so far: _load_best_model never looks in the adapter's sub-folder
    symptom=Symptom(
        description="after training the adapter in memory is the last step's, not the best checkpoint's; the only "
                    "sign is a warning about distributed training",
        warning=r"Could not locate the best model",
        observed="best_adapter_not_loaded",
    ),
)


def _train(ctx, adapter_name, load_after=False):
    import os

    import torch
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import TrainerCallback, TrainingArguments

    from benchsuite.scenario import Context

    base = ctx.causal_model()
    model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"), adapter_name=adapter_name)
    eval_rows = Context(ctx.workdir, seed=ctx.seed + 1).dataset(model, n=2)  # other rows than the training set
    seen = {}

    class Final(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            seen.update(best=state.best_model_checkpoint, best_metric=state.best_metric, last_step=state.global_step)

    strategy = "eval_strategy" if "eval_strategy" in TrainingArguments.__dataclass_fields__ else "evaluation_strategy"
    out = os.path.join(ctx.workdir, f"run-{adapter_name}-{load_after}")
    result = ctx.trainer_train(model, ctx.dataset(model, n=4), callbacks=[Final()], output_dir=out,
                               trainer_kwargs={"eval_dataset": eval_rows}, max_steps=4, per_device_eval_batch_size=2,
                               save_strategy="steps", save_steps=2, eval_steps=2, load_best_model_at_end=True,
                               metric_for_best_model="eval_loss", **{strategy: "steps"})
    folder = seen["best"] if adapter_name == "default" else os.path.join(seen["best"], adapter_name)
    if load_after:  # the user's workaround: load the best checkpoint's adapter into the model after training
        model.load_adapter(folder, adapter_name=adapter_name)
    best = load_file(os.path.join(folder, "adapter_model.safetensors"))
    current = {n.replace(f".{adapter_name}.", "."): p.detach() for n, p in model.named_parameters() if "lora_" in n}
    result.extra.update(best_checkpoint=os.path.basename(seen["best"]), best_eval_loss=seen["best_metric"],
                        last_step=seen["last_step"],
                        best_adapter_not_loaded=not all(torch.equal(current[k], v) for k, v in best.items()))
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx, adapter_name="sft")


@case.fix("keep the adapter name 'default' (get_peft_model(model, config) without adapter_name)")
def default_name(ctx):
    return _train(ctx, adapter_name="default")


@case.fix("after training, load the best adapter yourself: model.load_adapter(<best checkpoint>/<adapter_name>, "
          "adapter_name=<adapter_name>)")
def load_best_yourself(ctx):
    return _train(ctx, adapter_name="sft", load_after=True)
