"""Resuming with a new learning_rate: the checkpoint's optimizer and scheduler states keep the old one.

resume_from_checkpoint reloads optimizer.pt and scheduler.pt, and both carry the learning rate the run
started with (the optimizer's param_groups 'lr'/'initial_lr', the scheduler's base_lrs). A run resumed
with TrainingArguments(learning_rate=...) changed to lower (or raise) the rate goes on at the old rate;
the new value only shows in the logged arguments. The maintainers' answer: the rate is read from the
scheduler, by design.

The case trains 2 of 3 steps at a constant 1e-2, resumes with learning_rate=1e-3 and reads the rate the
optimizer applies at step 3.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="resume-new-learning-rate-ignored",
    title="resume_from_checkpoint with a changed learning_rate: training continues at the checkpoint's rate",
    references=["huggingface/transformers#9099"],
    family="resume",
    tags=["trainer", "resume", "lora", "peft", "scheduler", "silent"],
    affected={},  # every release: the optimizer and scheduler states are restored as saved
    # before 4.47 no checkpoint with an RNG file can be resumed under torch >= 2.6 (resume-rng-state-weights-only)
    applies={"transformers": ">=4.47"},
    symptom=Symptom(
        description="the resumed step is taken at learning rate 1e-2 (the checkpoint's), not the 1e-3 passed in "
                    "TrainingArguments; nothing warns",
        observed="new_learning_rate_ignored",
    ),
)

NEW_LR = 1e-3


def _model(ctx):
    from peft import get_peft_model

    model = ctx.causal_model()
    return get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))


def _interrupt_after(step):
    """A callback that stops the run after ``step`` (its checkpoint is written first): the job killed there."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                control.should_training_stop = True

    return Interrupt()


def _checkpoint(ctx) -> str:
    import os

    out = os.path.join(ctx.workdir, "first-run")
    path = os.path.join(out, "checkpoint-2")
    if not os.path.exists(os.path.join(path, "trainer_state.json")):
        model = _model(ctx)
        ctx.trainer_train(model, ctx.dataset(model, n=6), max_steps=3, callbacks=[_interrupt_after(2)],
                          save_strategy="steps", save_steps=1, output_dir=out, learning_rate=1e-2,
                          lr_scheduler_type="constant")
    return path


def _resume(ctx, drop_states=False):
    import os
    import shutil

    from transformers import Trainer, TrainerCallback

    ckpt = _checkpoint(ctx)
    if drop_states:  # a copy without optimizer.pt and scheduler.pt: weights and step only
        copy = os.path.join(ctx.workdir, "checkpoint-2-weights-and-step")
        if not os.path.exists(copy):
            shutil.copytree(ckpt, copy, ignore=shutil.ignore_patterns("optimizer.pt", "scheduler.pt"))
        ckpt = copy
    applied = []

    class AppliedRate(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            applied.append(optimizer.param_groups[0]["lr"])

    class Resuming(Trainer):  # trainer.train(resume_from_checkpoint=ckpt), as reported
        def train(self, *args, **kwargs):
            return super().train(resume_from_checkpoint=ckpt, **kwargs)

    model = _model(ctx)
    result = ctx.trainer_train(model, ctx.dataset(model, n=6), trainer_class=Resuming, callbacks=[AppliedRate()],
                               max_steps=3, save_steps=1, learning_rate=NEW_LR, lr_scheduler_type="constant")
    result.extra.update(requested_lr=NEW_LR, applied_lr=applied,
                        new_learning_rate_ignored=any(abs(lr - NEW_LR) > 1e-12 for lr in applied))
    return result


@case.trigger
def trigger(ctx):
    return _resume(ctx)


@case.fix("resume from a copy of the checkpoint without optimizer.pt and scheduler.pt (weights and step kept; "
          "AdamW's moments start over)")
def drop_optimizer_and_scheduler(ctx):
    return _resume(ctx, drop_states=True)
