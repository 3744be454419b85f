"""eval_loss is nan while the training loss looks fine: a truncated row has no labelled token left.

Instruction tuning masks the prompt (-100) and trains on the completion. When prompt + completion is
cut to max_length from the right, a long prompt leaves no completion token: every label of the row
is -100. Cross-entropy over zero labelled tokens is 0/0 = NaN (mean reduction, or the Trainer's
sum / num_items_in_batch with a count of 0). The evaluation loop averages the per-batch losses, so one
such eval batch makes `eval_loss` nan for the whole run, while the training log stays finite (the
Trainer's logging filter hides NaN training steps, and their gradient is zero).
Since transformers 5.23 the evaluation loop drops non-finite batch losses (logging_nan_inf_filter), so
eval_loss is finite again, averaged over the rows that have a label.
The case builds prompt/completion rows with the offline word tokenizer, truncates them to 12 tokens
as the reported scripts do, and trains 2 steps with evaluation on a tiny Llama (float32).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="eval-loss-nan-truncated-completion",
    title="eval_loss: nan for the whole run (prompt longer than max_length: every label of the row is -100)",
    references=["meta-llama/llama-cookbook#133", "huggingface/trl#1053", "ymcui/Chinese-LLaMA-Alpaca-2#424",
                "hpcaitech/ColossalAI#5370", "pytorch/pytorch#116349"],
    signs=["loss-nonfinite"],  # what its training log shows (doctor --log)
    family="loss",
    tags=["eval", "labels", "truncation", "nan", "trainer", "silent"],
    affected={"transformers": "<5.23"},
    fixed_in="transformers 5.23 (the evaluation loop drops non-finite batch losses under logging_nan_inf_filter)",
    symptom=Symptom(
        description="eval_loss is nan (an eval batch whose rows have no labelled token) while every training "
                    "loss in the log is finite",
        observed="eval_loss_nan",
    ),
)

MAX_LENGTH = 12


def _rows(ctx, keep_completion=False, drop_empty=False, seed_offset=0):
    import torch

    tok = ctx.tokenizer()
    prompts = (ctx.sentences(4, words=4, seed_offset=seed_offset)
               + ctx.sentences(2, words=14, seed_offset=seed_offset + 1))
    completions = ctx.sentences(6, words=3, seed_offset=seed_offset + 2)
    rows = []
    for prompt, completion in zip(prompts, completions):
        p = tok(prompt)["input_ids"]
        c = tok(completion)["input_ids"] + [tok.eos_token_id]
        if keep_completion:  # truncate the prompt (from the left), never the completion
            p = p[max(0, len(p) - (MAX_LENGTH - len(c))):]
        ids = (p + c)[:MAX_LENGTH]  # the reported recipe: concatenate, then cut from the right
        labels = ([-100] * len(p) + c)[:MAX_LENGTH]
        pad = MAX_LENGTH - len(ids)
        rows.append({"input_ids": torch.tensor(ids + [tok.pad_token_id] * pad),
                     "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
                     "labels": torch.tensor(labels + [-100] * pad)})
    if drop_empty:  # keep only rows with a labelled token a causal LM can predict (after the shift)
        rows = [r for r in rows if (r["labels"][1:] != -100).any()]
    return rows


def _train(ctx, learning_rate=1e-2, **kw):
    import inspect
    import math

    from transformers import TrainerCallback, TrainingArguments

    class Metrics(TrainerCallback):
        def __init__(self):
            self.eval_losses, self.train_logged = [], []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.eval_losses.append(float(metrics["eval_loss"]))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.train_logged.append(float(logs["loss"]))

    model = ctx.text_model()
    train_rows, eval_rows = _rows(ctx, **kw), _rows(ctx, seed_offset=10, **kw)
    strategy = "eval_strategy" if "eval_strategy" in inspect.signature(TrainingArguments).parameters \
        else "evaluation_strategy"
    metrics = Metrics()
    result = ctx.trainer_train(model, train_rows, callbacks=[metrics],
                               trainer_kwargs={"eval_dataset": eval_rows}, max_steps=2,
                               per_device_train_batch_size=2, per_device_eval_batch_size=1,
                               learning_rate=learning_rate, eval_steps=2, **{strategy: "steps"})
    eval_nan = any(math.isnan(x) for x in metrics.eval_losses)
    train_finite = all(math.isfinite(x) for x in metrics.train_logged)
    empty = sum(int(not (r["labels"][1:] != -100).any()) for r in eval_rows)
    result.extra.update(eval_losses=[repr(x) for x in metrics.eval_losses], train_logged=metrics.train_logged,
                        eval_rows_without_labels=empty, eval_loss_nan=eval_nan and train_finite)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("drop the rows whose labels are all -100 after truncation")
def drop_empty_rows(ctx):
    return _train(ctx, drop_empty=True)


@case.fix("truncate the prompt, not the completion (keep the labelled tokens within max_length)")
def truncate_prompt(ctx):
    return _train(ctx, keep_completion=True)


@case.fix("lower the learning rate (circulated remedy)", works=False,
          note="the NaN is 0/0 over a row with no labelled token, in float32: no optimizer setting changes it")
def lower_lr(ctx):
    return _train(ctx, learning_rate=1e-5)
