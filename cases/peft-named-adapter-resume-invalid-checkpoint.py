"""resume_from_checkpoint with a PEFT adapter not named "default": "Can't find a valid checkpoint" (< 4.41).

PeftModel.save_pretrained writes an adapter named other than "default" into a sub-folder
(checkpoint-N/<adapter_name>/adapter_model.safetensors). Before 4.41, Trainer._load_from_checkpoint
looked for model or adapter weights only at the top of the checkpoint, so resuming any run whose
adapter had a name raised ValueError "Can't find a valid checkpoint at .../checkpoint-N".
transformers#30505 (4.41) also looks in the adapters' sub-folders.

The reports ran torch < 2.6, whose torch.load did not default to weights_only=True; these scenarios set
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to load the Trainer's rng_state.pth as that torch did, otherwise
every resume on these releases fails first on it (the case resume-rng-state-weights-only).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="peft-named-adapter-resume-invalid-checkpoint",
    title="resume_from_checkpoint with get_peft_model(..., adapter_name=...): Can't find a valid checkpoint",
    references=["huggingface/transformers#28531", "huggingface/transformers#30505"],
    family="resume",
    tags=["trainer", "resume", "lora", "peft", "crash"],
    affected={"transformers": "<4.41"},
    symptom=Symptom(description="ValueError: Can't find a valid checkpoint at .../checkpoint-1",
                    exception="ValueError", message=r"Can't find a valid checkpoint"),
    fixed_in="transformers 4.41 (huggingface/transformers#30505)",
)


def _interrupt_after(step):
    """A callback that stops the run after ``step`` (its checkpoint is written first): the job killed there."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                control.should_training_stop = True

    return Interrupt()


def _model(ctx, adapter_name):
    from peft import get_peft_model

    model = ctx.causal_model()
    return get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"), adapter_name=adapter_name)


def _checkpoint(ctx, adapter_name) -> str:
    import os

    out = os.path.join(ctx.workdir, f"first-run-{adapter_name}")
    path = os.path.join(out, "checkpoint-1")
    if not os.path.exists(os.path.join(path, "trainer_state.json")):
        model = _model(ctx, adapter_name)
        ctx.trainer_train(model, ctx.dataset(model, n=4), max_steps=2, callbacks=[_interrupt_after(1)],
                          save_strategy="steps", save_steps=1, output_dir=out)
    return path


def _resume(ctx, adapter_name, by_hand=False):
    import os

    from peft import PeftModel
    from transformers import Trainer

    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # torch.load's default before torch 2.6, as reported
    ckpt = _checkpoint(ctx, adapter_name)

    class Resuming(Trainer):  # trainer.train(resume_from_checkpoint=ckpt), as reported
        def train(self, *args, **kwargs):
            return super().train(resume_from_checkpoint=ckpt, **kwargs)

    if by_hand:  # the adapter from its sub-folder, trainable; a new run (optimizer and schedule start over)
        model = PeftModel.from_pretrained(ctx.causal_model(), os.path.join(ckpt, adapter_name),
                                          adapter_name=adapter_name, is_trainable=True)
        return ctx.trainer_train(model, ctx.dataset(model, n=4), max_steps=1)
    model = _model(ctx, adapter_name)
    return ctx.trainer_train(model, ctx.dataset(model, n=4), trainer_class=Resuming, max_steps=2, save_steps=1)


@case.trigger
def trigger(ctx):
    return _resume(ctx, "sft")


@case.fix("keep the adapter name 'default' (get_peft_model without adapter_name): its files sit at the top")
def default_name(ctx):
    return _resume(ctx, "default")


@case.fix("load checkpoint-N/<adapter_name> with PeftModel.from_pretrained(..., adapter_name=..., is_trainable=True) "
          "and train without resume_from_checkpoint (the optimizer state is lost)")
def load_by_hand(ctx):
    return _resume(ctx, "sft", by_hand=True)
