"""Resuming with a new per_device_train_batch_size: the Trainer keeps the checkpoint's batch size.

From 4.36 (the auto_find_batch_size support, transformers#27568) until 5.2, Trainer.train() restored
`_train_batch_size` from the checkpoint's trainer_state.json whenever it resumed, not only under
auto_find_batch_size. A run resumed with per_device_train_batch_size=2 x accumulation 1 instead of
1 x 2 (the same global batch) builds its dataloader with the old micro-batch of 1, so each optimizer
step sees half the samples and max_steps doubles; the only sign is the warning that the batch sizes
"do not match", which is printed in the fixed releases too. transformers#43770 (5.2) restores it only
under auto_find_batch_size.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="resume-new-batch-size-ignored",
    title="resume_from_checkpoint with a new per_device_train_batch_size: the checkpoint's batch size is used",
    references=["huggingface/transformers#43708", "huggingface/transformers#43770", "unslothai/unsloth#973"],
    family="resume",
    tags=["trainer", "resume", "lora", "peft", "batch-size", "silent"],
    affected={"transformers": ">=4.36,<5.2"},
    # before 4.47 no checkpoint with an RNG file can be resumed under torch >= 2.6 (resume-rng-state-weights-only)
    applies={"transformers": ">=4.47"},
    symptom=Symptom(
        description="the resumed run feeds micro-batches of the checkpoint's size (1), not the 2 asked for, and "
                    "plans more optimizer steps than the same global batch needs",
        observed="checkpoint_batch_size_used",
    ),
    fixed_in="transformers 5.2 (huggingface/transformers#43770)",
)


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


EPOCH = dict(max_steps=-1, num_train_epochs=1, save_strategy="steps", save_steps=1)


def _checkpoint(ctx) -> str:
    """Micro-batch 1 x accumulation 2 over 4 rows (2 optimizer steps), interrupted after step 1."""
    import os

    out = os.path.join(ctx.workdir, "first-run")
    path = os.path.join(out, "checkpoint-1")
    if not os.path.exists(os.path.join(path, "trainer_state.json")):
        model = _model(ctx)
        ctx.trainer_train(model, ctx.dataset(model, n=4), callbacks=[_interrupt_after(1)], output_dir=out,
                          per_device_train_batch_size=1, gradient_accumulation_steps=2, **EPOCH)
    return path


def _resume(ctx, batch, accumulation, state_edit=False):
    import json
    import os
    import shutil

    from transformers import Trainer, TrainerCallback

    ckpt = _checkpoint(ctx)
    if state_edit:  # a copy whose trainer_state.json records the new batch size
        copy = os.path.join(ctx.workdir, "checkpoint-1-new-batch")
        if not os.path.exists(copy):
            shutil.copytree(ckpt, copy)
            state_file = os.path.join(copy, "trainer_state.json")
            with open(state_file) as f:
                state = json.load(f)
            state["train_batch_size"] = batch
            with open(state_file, "w") as f:
                json.dump(state, f)
        ckpt = copy
    micro_batches, planned = [], {}

    class Resuming(Trainer):  # trainer.train(resume_from_checkpoint=ckpt), as reported
        def train(self, *args, **kwargs):
            return super().train(resume_from_checkpoint=ckpt, **kwargs)

        def training_step(self, model, inputs, *args, **kwargs):
            micro_batches.append(int(inputs["input_ids"].shape[0]))
            return super().training_step(model, inputs, *args, **kwargs)

    class Plan(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            planned["max_steps"] = state.max_steps

    model = _model(ctx)
    result = ctx.trainer_train(model, ctx.dataset(model, n=4), trainer_class=Resuming, callbacks=[Plan()],
                               per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, **EPOCH)
    result.extra.update(requested_micro_batch=batch, micro_batches_seen=micro_batches,
                        planned_max_steps=planned.get("max_steps"),
                        checkpoint_batch_size_used=any(b != batch for b in micro_batches))
    return result


@case.trigger
def trigger(ctx):
    return _resume(ctx, batch=2, accumulation=1)


@case.fix("resume with the checkpoint's own layout (per_device_train_batch_size=1, gradient_accumulation_steps=2); "
          "change the batch size in a new run")
def same_layout(ctx):
    return _resume(ctx, batch=1, accumulation=2)


@case.fix("write the new batch size into the checkpoint's trainer_state.json ('train_batch_size') before resuming")
def edit_trainer_state(ctx):
    return _resume(ctx, batch=2, accumulation=1, state_edit=True)
