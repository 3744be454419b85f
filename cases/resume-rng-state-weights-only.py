"""transformers < 4.47 under torch >= 2.6: resume_from_checkpoint dies loading rng_state.pth (weights_only).

torch 2.6 flipped torch.load's default to weights_only=True. The Trainer's rng_state.pth holds NumPy's
RNG state (an ndarray and its dtype), which the restricted unpickler refuses, and transformers before
4.47 called torch.load(rng_file) with no allowlist, so every resume of a checkpoint that has an RNG file
fails at the first resumed step with "Weights only load failed ... Unsupported global:
numpy._core.multiarray._reconstruct". transformers 4.47 loads it inside torch.serialization.safe_globals
with the NumPy types allowlisted. The error message's own suggestion (allowlist _reconstruct) is not
enough: the next load fails on numpy.ndarray.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="resume-rng-state-weights-only",
    title="resume_from_checkpoint: UnpicklingError 'Weights only load failed' on rng_state.pth (torch >= 2.6)",
    references=["huggingface/transformers#34631", "2U1/Qwen-VL-Series-Finetune#185", "modelscope/ms-swift#5235"],
    family="resume",
    tags=["trainer", "resume", "lora", "peft", "torch-load", "crash"],
    affected={"transformers": "<4.47", "torch": ">=2.6"},
    symptom=Symptom(
        description="UnpicklingError 'Weights only load failed' from Trainer._load_rng_state at the first resumed step",
        exception="UnpicklingError",
        message=r"Weights only load failed",
    ),
    fixed_in="transformers 4.47 (rng_state.pth loaded inside torch.serialization.safe_globals)",
    notes="Every checkpoint written with the default save_only_model=False has rng_state.pth, so on these "
          "releases no Trainer run can be resumed under torch >= 2.6. The other resume cases apply from 4.47 on "
          "for this reason.",
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
    import os

    out = os.path.join(ctx.workdir, "first-run")
    path = os.path.join(out, "checkpoint-1")
    if not os.path.exists(os.path.join(path, "trainer_state.json")):
        model = _model(ctx)
        ctx.trainer_train(model, ctx.dataset(model, n=4), max_steps=2, callbacks=[_interrupt_after(1)],
                          save_strategy="steps", save_steps=1, output_dir=out)
    return path


def _resume(ctx, drop_rng_file=False):
    import os
    import shutil

    from transformers import Trainer

    ckpt = _checkpoint(ctx)
    if drop_rng_file:  # a copy of the checkpoint without rng_state.pth
        copy = os.path.join(ctx.workdir, "checkpoint-1-without-rng")
        if not os.path.exists(copy):
            shutil.copytree(ckpt, copy, ignore=shutil.ignore_patterns("rng_state*.pth"))
        ckpt = copy

    class Resuming(Trainer):  # trainer.train(resume_from_checkpoint=ckpt), as reported
        def train(self, *args, **kwargs):
            return super().train(resume_from_checkpoint=ckpt, **kwargs)

    model = _model(ctx)
    return ctx.trainer_train(model, ctx.dataset(model, n=4), trainer_class=Resuming, max_steps=2, save_steps=1)


def _numpy_globals(complete):
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core
    if not complete:
        return [core.multiarray._reconstruct]
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


@case.trigger
def trigger(ctx):
    return _resume(ctx)


@case.fix("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (torch.load's pre-2.6 default; only for checkpoints you wrote)")
def force_no_weights_only(ctx):
    import os

    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return _resume(ctx)


@case.fix("torch.serialization.add_safe_globals([_reconstruct, np.ndarray, np.dtype, UInt32DType]) before "
          "trainer.train() (what transformers 4.47 does)")
def allowlist_numpy(ctx):
    import torch

    torch.serialization.add_safe_globals(_numpy_globals(complete=True))
    return _resume(ctx)


@case.fix("delete rng_state.pth from the checkpoint (resumes without restoring the RNG states)")
def drop_rng_state(ctx):
    return _resume(ctx, drop_rng_file=True)


@case.fix("add_safe_globals([numpy._core.multiarray._reconstruct]) only, as the error message suggests",
          works=False, note="the next global in the file, numpy.ndarray, is refused in turn")
def allowlist_reconstruct_only(ctx):
    import torch

    torch.serialization.add_safe_globals(_numpy_globals(complete=False))
    return _resume(ctx)
