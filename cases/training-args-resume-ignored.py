"""TrainingArguments(resume_from_checkpoint=...) is never read by the Trainer: training starts over.

`resume_from_checkpoint` is a field of TrainingArguments only for users' own scripts (the example
scripts read it and pass it on); `Trainer.train()` resumes only from its own `resume_from_checkpoint`
argument. A script that sets it in TrainingArguments and calls `trainer.train()` trains a fresh LoRA
adapter from step 0 with a fresh optimizer and scheduler; nothing warns. The case saves a checkpoint
after 2 steps, then "resumes" with max_steps=3 and records, when training begins, the global step and
whether the adapter holds the checkpoint's weights.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="training-args-resume-ignored",
    title="TrainingArguments(resume_from_checkpoint=...) is ignored: trainer.train() starts from step 0",
    references=["huggingface/transformers#23325", "huggingface/transformers#7198",
                "huggingface/transformers#27749"],
    family="resume",
    tags=["trainer", "resume", "lora", "peft", "silent"],
    affected={},  # every release: only Trainer.train(resume_from_checkpoint=...) resumes
    # before 4.47 no checkpoint with an RNG file can be resumed under torch >= 2.6 (resume-rng-state-weights-only)
    applies={"transformers": ">=4.47"},
    symptom=Symptom(
        description="the 'resumed' run begins at global step 0 with a fresh adapter (lora_B all zero), not the "
                    "checkpoint's step and weights; it retrains every step",
        observed="restarted_from_scratch",
    ),
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


def _checkpoint(ctx) -> str:
    """A LoRA run of 2 steps with a checkpoint at each step (made once per case)."""
    import os

    out = os.path.join(ctx.workdir, "first-run")
    path = os.path.join(out, "checkpoint-2")
    if not os.path.exists(os.path.join(path, "trainer_state.json")):
        model = _model(ctx)
        ctx.trainer_train(model, ctx.dataset(model, n=8), max_steps=3, callbacks=[_interrupt_after(2)],
                          save_strategy="steps", save_steps=1,
                          output_dir=out)
    return path


def _resume(ctx, via_train_call):
    import os

    import torch
    from safetensors.torch import load_file
    from transformers import Trainer, TrainerCallback

    ckpt = _checkpoint(ctx)
    saved = load_file(os.path.join(ckpt, "adapter_model.safetensors"))
    seen = {}

    class AtBegin(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["global_step"] = state.global_step
            lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
            seen["lora_B_zero"] = all(bool((v == 0).all()) for v in lora_b.values())
            seen["matches_checkpoint"] = all(torch.equal(v, saved[n.replace(".default", "")])
                                             for n, v in lora_b.items())

    class ResumingTrainer(Trainer):  # the reported call: trainer.train(resume_from_checkpoint=path)
        def train(self, *args, **kwargs):
            return super().train(resume_from_checkpoint=ckpt, **kwargs)

    model = _model(ctx)
    options = dict(max_steps=3, save_steps=1, callbacks=[AtBegin()])
    if via_train_call:
        result = ctx.trainer_train(model, ctx.dataset(model, n=8), trainer_class=ResumingTrainer, **options)
    else:  # as reported: the path goes into TrainingArguments, trainer.train() is called without it
        result = ctx.trainer_train(model, ctx.dataset(model, n=8), resume_from_checkpoint=ckpt, **options)
    result.extra.update({f"at_train_begin_{k}": v for k, v in seen.items()})
    result.extra["optimizer_steps_run"] = len(result.losses)
    result.extra["restarted_from_scratch"] = seen["global_step"] == 0 and not seen["matches_checkpoint"]
    return result


@case.trigger
def trigger(ctx):
    return _resume(ctx, via_train_call=False)


@case.fix("trainer.train(resume_from_checkpoint=path) (or resume_from_checkpoint=True for the last one)")
def train_argument(ctx):
    return _resume(ctx, via_train_call=True)
