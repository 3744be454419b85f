"""LoRA + reentrant gradient checkpointing without the input-grad hook: the adapters never train.

Reported as torch's warning "None of the inputs have requires_grad=True. Gradients will be None" in
MedicalGPT's reward-model training (MedicalGPT#359: learning rate 0 and chosen/rejected rewards None in
the log; the maintainer's answer was "use float32"), in trl#835 and in open-unlearning#178. MedicalGPT's
public scripts call model.enable_input_require_grads() after enabling checkpointing, so the reports do
not show what left the inputs without requires_grad there. This case runs the setup that gives exactly
that warning and its effect: get_peft_model, then checkpointing switched on (as
TrainingArguments(gradient_checkpointing=True) does), and no input-grad hook. On transformers up to 4.57
that is reentrant checkpointing (up to 4.37 by torch's default, 4.38-4.57 by {"use_reentrant": True})
and nothing makes the embedding output require grad for a peft model, so the LoRA weights inside the
checkpointed blocks get no gradient. With a sequence-classification head outside those blocks training
runs on and only the head learns: silent. transformers 5.0 switched to non-reentrant and installs the
hook itself. Casting to float32, the remedy given in MedicalGPT#359, is checked and does not help here.
"""
from benchsuite.case import Case, Explains, Symptom

case = Case(
    id="reentrant-checkpoint-frozen-inputs",
    title="get_peft_model + reentrant gradient checkpointing: LoRA weights get no gradient, only the head trains",
    references=["shibing624/MedicalGPT#359", "huggingface/trl#835", "locuslab/open-unlearning#178"],
    family="gradient-checkpointing",
    tags=["gradient-checkpointing", "lora", "reward-model", "silent"],
    # Bisected over 135 releases 4.30.0..5.23.0 (docs/results/bisect-reentrant-checkpoint-frozen-inputs.json):
    # reproduced through 4.57.6, fixed from 5.0.0; 4.30-4.34 reproduce too, through torch's own reentrant default.
    affected={"transformers": "<5"},
    symptom=Symptom(
        description="UserWarning 'None of the inputs have requires_grad=True. Gradients will be None'; "
                    "every LoRA gradient is None and lora_B stays zero while the score head trains",
        warning=r"None of the inputs have requires_grad=True",
        no_grad=r"lora_[AB]",
        unchanged=r"lora_B",
    ),
    explains=[Explains("no-gradient", params=r"lora_", note="every LoRA weight gets no gradient while the head "
                       "trains; grad_norm looks healthy")],
    supports_model=True,
    fixed_in="transformers 5.0 (non-reentrant default, input-grad hook installed for every model)",
    notes="Explicit reentrant checkpointing without the hook fails on every version; the default does up to 4.57 "
          "(before 4.35 through torch's reentrant default, 4.35-4.37 likewise, 4.38-4.57 by transformers' own "
          "use_reentrant=True). Releases before 4.30 were not probed.",
)


def _train(ctx, enable_kwargs=None, input_hook=False, lr=1e-2, cast_fp32=False):
    from peft import get_peft_model

    model = ctx.seq_cls_model(num_labels=1)
    if cast_fp32:
        model = model.float()
    model.config.use_cache = False
    model = get_peft_model(model, ctx.lora_config(model, "SEQ_CLS"))
    # What TrainingArguments(gradient_checkpointing=True) does inside Trainer.__init__/train.
    if enable_kwargs is None:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=enable_kwargs)
    if input_hook:
        model.enable_input_require_grads()
    return ctx.train(model, lr=lr, loss_fn=ctx.pairwise_loss, batch=ctx.reward_batch(model))


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("model.enable_input_require_grads() after enabling checkpointing")
def enable_input_require_grads(ctx):
    return _train(ctx, input_hook=True)


@case.fix("gradient_checkpointing_kwargs={'use_reentrant': False}", applies={"transformers": ">=4.35"})
def non_reentrant(ctx):
    return _train(ctx, enable_kwargs={"use_reentrant": False})


@case.fix("cast everything to float32 (circulated remedy)", works=False,
          note="the weights already are float32: dtype is not the cause")
def cast_float32(ctx):
    return _train(ctx, cast_fp32=True)


@case.fix("check that the learning rate is not 0 (circulated remedy)", works=False,
          note="a healthy learning rate cannot train weights that get no gradient")
def nonzero_learning_rate(ctx):
    return _train(ctx, lr=2e-4)
