"""ChatGLM reward model + LoRA task_type=SEQ_CLS: TypeError ... unexpected keyword argument 'output_attentions'.

MedicalGPT's reward-modelling script loads ChatGLM2/3 (remote code) with
AutoModelForSequenceClassification, enables gradient checkpointing and wraps it with LoRA
task_type=SEQ_CLS. The run dies at the first forward with
"TypeError: ChatGLMForSequenceClassification.forward() got an unexpected keyword argument
'output_attentions'", right after transformers' "old version of the checkpointing format" warning,
so gradient checkpointing gets the blame and "set gradient_checkpointing=False" circulates. The
keyword comes from peft's PeftModelForSequenceClassification.forward, which always passes
output_attentions, while ChatGLM's forward takes neither it nor **kwargs. This case checks each
remedy. The model is benchsuite's own ChatGLM-style remote code (benchsuite/remote/chatglm), loaded
through trust_remote_code from a local folder; --model PATH runs a real local ChatGLM checkpoint.
"""
from benchsuite.case import Case, Symptom

CHATGLM_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]

case = Case(
    id="chatglm-seqcls-output-attentions",
    title="ChatGLM reward model with LoRA SEQ_CLS: TypeError unexpected keyword argument 'output_attentions'",
    references=["shibing624/MedicalGPT#343", "shibing624/MedicalGPT#341", "shibing624/MedicalGPT#300"],
    family="api-change",
    tags=["remote-code", "lora", "reward-model", "gradient-checkpointing", "crash"],
    affected={},  # every peft release passes output_attentions from its SEQ_CLS forward
    # On 4.35.x this setup stops earlier, at gradient_checkpointing_enable(): remote-code-old-checkpointing-enable.
    applies={"transformers": "!=4.35.*"},
    symptom=Symptom(
        description="TypeError: ChatGLMForSequenceClassification.forward() got an unexpected keyword argument "
                    "'output_attentions' at the first training forward",
        exception="TypeError",
        message=r"unexpected keyword argument 'output_attentions'",
    ),
    supports_model=True,
    model_families=["chatglm"],
    notes="Gradient checkpointing is incidental: the keyword comes from peft's SEQ_CLS wrapper.",
    # Under the pairwise loss -log sigmoid(r_chosen - r_rejected) the head's bias cancels: its gradient is
    # exactly zero at every step (fix no_seq_cls_task_type trains the head through modules_to_save).
    expected_zero=r"classifier_head\..*bias$",
)


def _chatglm(ctx, patch_forward=False):
    model = ctx.chatglm("seq_cls")
    if patch_forward:
        import inspect

        cls = type(model)
        original = cls.forward
        accepted = set(inspect.signature(original).parameters)

        def forward(self, *args, **kwargs):  # accept and drop what the model does not take
            return original(self, *args, **{k: v for k, v in kwargs.items() if k in accepted})

        cls.forward = forward
    return model


def _reward_training(ctx, model, checkpointing=True, task_type="SEQ_CLS", modules_to_save=None):
    from peft import get_peft_model

    if checkpointing:  # as MedicalGPT's reward script does before wrapping
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        model.enable_input_require_grads()
    lora = ctx.lora_config(model, task_type, target_modules=CHATGLM_TARGETS if _is_chatglm(model) else
                           ctx.lora_targets(model), modules_to_save=modules_to_save)
    model = get_peft_model(model, lora)
    return ctx.train(model, loss_fn=ctx.pairwise_loss, batch=ctx.reward_batch(model))


def _is_chatglm(model) -> bool:
    return any(n.endswith("query_key_value") for n, _ in model.named_modules())


@case.trigger
def trigger(ctx):
    return _reward_training(ctx, _chatglm(ctx))


@case.fix("patch ChatGLM's forward to accept (and drop) extra keyword arguments")
def patch_forward_kwargs(ctx):
    return _reward_training(ctx, _chatglm(ctx, patch_forward=True))


@case.fix("LoRA without task_type=SEQ_CLS, classifier_head in modules_to_save")
def no_seq_cls_task_type(ctx):
    return _reward_training(ctx, _chatglm(ctx), task_type=None, modules_to_save=["classifier_head"])


@case.fix("use a model with a native transformers sequence-classification class")
def native_seq_cls_model(ctx):
    from benchsuite.models import tiny_llama

    return _reward_training(ctx, tiny_llama("seq_cls", seed=ctx.seed, num_labels=1))


@case.fix("set gradient_checkpointing=False (circulated remedy)", works=False,
          note="the keyword comes from peft's SEQ_CLS forward, not from checkpointing")
def disable_checkpointing(ctx):
    return _reward_training(ctx, _chatglm(ctx), checkpointing=False)
