"""Continuing a finished LoRA run on new data with resume_from_checkpoint: the Trainer trains nothing.

resume_from_checkpoint restores the *run*, not just the weights: the global step comes back from
trainer_state.json and the Trainer trains only the steps left until max_steps (num_train_epochs x steps
per epoch). A checkpoint written at the end of a run has no steps left, so "continuing" it for another
epoch on a new dataset with the same arguments returns at once: no loss is logged, no checkpoint is
written, the adapter is exactly the old one, and no warning says why. Reported as training that
"skips straight to eval" or finishes without logging.

The case trains a LoRA adapter for one epoch (2 steps), then resumes from its last checkpoint on a new
dataset with num_train_epochs=1 and counts the optimizer steps and the adapter weights that changed.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="resume-finished-checkpoint-trains-nothing",
    title="resume_from_checkpoint of a finished run on new data: 0 steps, the adapter never changes, no warning",
    references=["hiyouga/LlamaFactory#7085", "hiyouga/LlamaFactory#5499", "modelscope/ms-swift#3396"],
    family="resume",
    tags=["trainer", "resume", "lora", "peft", "silent"],
    affected={},  # every release: the restored global step already equals max_steps
    # before 4.47 no checkpoint with an RNG file can be resumed under torch >= 2.6 (resume-rng-state-weights-only)
    applies={"transformers": ">=4.47"},
    symptom=Symptom(
        description="trainer.train(resume_from_checkpoint=...) returns after 0 optimizer steps; the new data is never "
                    "trained on and the adapter equals the checkpoint's",
        observed="trained_nothing",
    ),
)


def _model(ctx):
    from peft import get_peft_model

    model = ctx.causal_model()
    return get_peft_model(model, ctx.lora_config(model, "CAUSAL_LM"))


def _new_data(ctx, model):
    from benchsuite.scenario import Context

    return Context(ctx.workdir, seed=ctx.seed + 1).dataset(model, n=4)  # other rows than the first run's


def _checkpoint(ctx) -> str:
    """One full epoch (4 rows, batch 2: 2 steps); its last checkpoint is the end of the run."""
    import os

    out = os.path.join(ctx.workdir, "first-run")
    path = os.path.join(out, "checkpoint-2")
    if not os.path.exists(os.path.join(path, "trainer_state.json")):
        model = _model(ctx)
        ctx.trainer_train(model, ctx.dataset(model, n=4), max_steps=-1, num_train_epochs=1, save_strategy="steps",
                          save_steps=1, output_dir=out)
    return path


def _continue(ctx, resume=True, **training_args):
    import os

    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Trainer

    ckpt = _checkpoint(ctx)

    class Resuming(Trainer):  # trainer.train(resume_from_checkpoint=ckpt), as reported
        def train(self, *args, **kwargs):
            return super().train(resume_from_checkpoint=ckpt, **kwargs)

    if resume:
        model = _model(ctx)
        trainer_class = Resuming
    else:  # the weights only: the saved adapter, trainable, and a new run (optimizer, schedule, step 0)
        model = PeftModel.from_pretrained(ctx.causal_model(), ckpt, is_trainable=True)
        trainer_class = Trainer
    options = dict(max_steps=-1, num_train_epochs=1, save_steps=1)
    options.update(training_args)
    result = ctx.trainer_train(model, _new_data(ctx, model), trainer_class=trainer_class, **options)
    saved = load_file(os.path.join(ckpt, "adapter_model.safetensors"))
    lora = {n.replace(".default", ""): p.detach() for n, p in model.named_parameters() if "lora_" in n}
    result.extra.update(optimizer_steps=len(result.losses),
                        adapter_equals_checkpoint=all(torch.equal(lora[k], v) for k, v in saved.items()),
                        trained_nothing=len(result.losses) == 0)
    if not result.losses:  # nothing ran: report the facts (a run of 0 steps is not a training outcome)
        return ctx.observed(**result.extra)
    return result


@case.trigger
def trigger(ctx):
    return _continue(ctx)


@case.fix("load the checkpoint's adapter with PeftModel.from_pretrained(base, ckpt, is_trainable=True) and "
          "call trainer.train() without resume_from_checkpoint (new data = a new run)")
def weights_only(ctx):
    return _continue(ctx, resume=False)


@case.fix("keep resuming but count the finished epoch: num_train_epochs=2 (or raise max_steps past the saved step)")
def more_epochs(ctx):
    return _continue(ctx, num_train_epochs=2)
