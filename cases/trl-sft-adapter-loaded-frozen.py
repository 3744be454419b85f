"""trl's SFTTrainer continuing from an adapter loaded with PeftModel.from_pretrained(): nothing trains.

PeftModel.from_pretrained defaults to is_trainable=False, so the adapter handed to the trainer has no
trainable parameter. trl's maintainers traced the GRPOTrainer report (trl#6700) to this default and
pointed to is_trainable=True; this case runs the same continuation through SFTTrainer.

Silent since trl turned gradient checkpointing on by default in SFTConfig (the PEFT model's inputs then
require grad, so the loss has a grad_fn and backward runs with nothing to train). With an older SFTConfig
the same frozen adapter fails loudly at the first backward ("element 0 of tensors does not require grad
and does not have a grad_fn"): the same root cause, counted here as reproduced too.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-sft-adapter-loaded-frozen",
    title="SFTTrainer on a PeftModel loaded without is_trainable=True: trainable params 0, nothing trains",
    references=["huggingface/trl#6700", "huggingface/trl#786"],
    signs=["grad-norm-zero"],  # what its training log shows (doctor --log)
    family="resume",
    tags=["trl", "sft", "lora", "peft", "resume", "silent"],
    requires=["trl", "datasets"],
    affected={},  # PeftModel.from_pretrained(is_trainable=False) is peft's default in every release
    symptom=Symptom(description="the model the SFTTrainer trains has no trainable parameter; the steps run "
                                "(losses are logged) and no LoRA weight changes (with trl's older SFTConfig, "
                                "without gradient checkpointing, the first backward raises instead)",
                    observed="nothing_trains"),
)


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _base(ctx):
    from benchsuite.models import tiny_llama

    return tiny_llama("causal", seed=ctx.seed, vocab_size=64, pad_token_id=0, eos_token_id=1, bos_token_id=1)


def _adapter(ctx) -> str:
    import os

    from peft import get_peft_model

    path = os.path.join(ctx.workdir, "adapter")
    if not os.path.exists(path):
        base = _base(ctx)
        get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM")).save_pretrained(path)
    return path


def _train(ctx, **load_kwargs):
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from trl import SFTConfig, SFTTrainer

    model = PeftModel.from_pretrained(_base(ctx), _adapter(ctx), **load_kwargs)
    g = torch.Generator().manual_seed(ctx.seed)
    text = [" ".join(f"w{int(i)}" for i in torch.randint(0, 61, (10,), generator=g)) for _ in range(8)]
    config = SFTConfig(output_dir=ctx.workdir + "/sft", max_steps=2, per_device_train_batch_size=2,
                       learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                       max_length=16, disable_tqdm=True, seed=ctx.seed)

    class SFT(SFTTrainer):  # ctx.trainer_train passes TrainingArguments; the SFTTrainer gets its SFTConfig
        def __init__(self, args=None, **kwargs):
            kwargs.pop("optimizers", None)
            super().__init__(args=config, processing_class=_tokenizer(), **kwargs)

    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    frozen = not any(p.requires_grad for p in model.parameters())
    try:
        result = ctx.trainer_train(model, Dataset.from_dict({"text": text}), trainer_class=SFT)
    except RuntimeError as exc:
        if frozen and "does not require grad" in str(exc):  # the loud form (no gradient checkpointing)
            return ctx.observed(nothing_trains=True, loud=f"RuntimeError: {exc}")
        raise
    after = dict(model.named_parameters())
    # measured after training too: the trainer could have unfrozen the adapter after ctx counted it
    unchanged = all(torch.equal(v, after[n].detach()) for n, v in lora.items())
    result.extra.update(lora_unchanged=unchanged, nothing_trains=unchanged and not result.trainable)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("PeftModel.from_pretrained(..., is_trainable=True)")
def is_trainable(ctx):
    return _train(ctx, is_trainable=True)
