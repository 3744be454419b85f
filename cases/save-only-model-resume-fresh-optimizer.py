"""Resuming from a checkpoint saved with save_only_model=True: a fresh optimizer and a restarted LR schedule.

save_only_model=True writes the weights (here the LoRA adapter) and trainer_state.json but no
optimizer.pt, scheduler.pt or rng_state.pth. trainer.train(resume_from_checkpoint=...) still accepts the
folder: it restores the adapter and the global step, finds no optimizer or scheduler state and silently
builds new ones, so AdamW's moments restart from zero and the scheduler restarts at step 0 (warmup
again) while the step counter continues. Nothing is logged. (Under DeepSpeed the same checkpoint fails
loudly with "Can't find a valid checkpoint", LlamaFactory#5497.)

The case trains 2 of 3 steps with a linear schedule and a 2-step warmup, saves, resumes, and reads at
the first resumed step the scheduler's step count and AdamW's step count next to the global step.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="save-only-model-resume-fresh-optimizer",
    title="resume_from_checkpoint on a save_only_model=True checkpoint: optimizer and LR schedule silently restart",
    references=["hiyouga/LlamaFactory#5497", "dexmal/opendm#7"],
    family="resume",
    tags=["trainer", "resume", "lora", "peft", "scheduler", "optimizer", "silent"],
    affected={},  # every release with save_only_model: resuming never checks that the states are there
    # before 4.47 no checkpoint with an RNG file can be resumed under torch >= 2.6 (resume-rng-state-weights-only)
    applies={"transformers": ">=4.47"},
    symptom=Symptom(
        description="at global step 3 of the resumed run the LR scheduler is at step 1 (warmup restarted) and AdamW "
                    "has taken 1 step: the optimizer and scheduler states were not restored, and nothing says so",
        observed="training_state_reset",
    ),
)

SCHEDULE = dict(learning_rate=1e-2, lr_scheduler_type="linear", warmup_steps=2)


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


def _checkpoint(ctx, save_only_model) -> str:
    import os

    out = os.path.join(ctx.workdir, f"first-run-save-only-model-{save_only_model}")
    path = os.path.join(out, "checkpoint-2")
    if not os.path.exists(os.path.join(path, "trainer_state.json")):
        model = _model(ctx)
        ctx.trainer_train(model, ctx.dataset(model, n=6), max_steps=3, callbacks=[_interrupt_after(2)],
                          save_strategy="steps", save_steps=1,
                          output_dir=out, save_only_model=save_only_model, **SCHEDULE)
    return path


def _resume(ctx, save_only_model):
    import os

    from transformers import Trainer, TrainerCallback

    ckpt = _checkpoint(ctx, save_only_model)
    seen = {}

    class FirstResumedStep(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
            if "global_step" in seen:
                return
            adam_steps = {float(s["step"]) for s in optimizer.state.values() if "step" in s}
            seen.update(global_step=state.global_step, scheduler_step=lr_scheduler.last_epoch,
                        adam_step=max(adam_steps), lr=lr_scheduler.get_last_lr()[0])

    class Resuming(Trainer):  # trainer.train(resume_from_checkpoint=ckpt), as reported
        def train(self, *args, **kwargs):
            return super().train(resume_from_checkpoint=ckpt, **kwargs)

    model = _model(ctx)
    result = ctx.trainer_train(model, ctx.dataset(model, n=6), trainer_class=Resuming, callbacks=[FirstResumedStep()],
                               max_steps=3, save_steps=1, save_only_model=save_only_model, **SCHEDULE)
    result.extra.update(seen)
    result.extra["checkpoint_files"] = sorted(os.listdir(ckpt))
    result.extra["training_state_reset"] = (seen["scheduler_step"] != seen["global_step"]
                                            or seen["adam_step"] != seen["global_step"])
    return result


@case.trigger
def trigger(ctx):
    return _resume(ctx, save_only_model=True)


@case.fix("save_only_model=False (the default) for checkpoints meant to be resumed")
def full_checkpoints(ctx):
    return _resume(ctx, save_only_model=False)
