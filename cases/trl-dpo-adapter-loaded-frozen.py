"""trl's DPOTrainer continuing from an adapter loaded with PeftModel.from_pretrained(): nothing trains.

The report (trl#6700) is about GRPOTrainer; trl's maintainers traced it to PeftModel.from_pretrained's
default is_trainable=False: the adapter is frozen before any trainer sees it, with any trainer. This
case runs the continuation through DPOTrainer
(the reference model is the base with the adapter disabled). Unlike SFT and GRPO, where the steps run
silently, DPO's first backward raises "element 0 of tensors does not require grad and does not have a
grad_fn" (trl 1.16).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-dpo-adapter-loaded-frozen",
    title="DPOTrainer on a PeftModel loaded without is_trainable=True: trainable params 0, "
          "RuntimeError element 0 of tensors does not require grad",
    references=["huggingface/trl#6700", "huggingface/peft#282"],
    family="rl",
    tags=["trl", "dpo", "preference", "lora", "peft", "resume", "crash"],
    requires=["trl", "datasets"],
    affected={},  # PeftModel.from_pretrained(is_trainable=False) is peft's default in every release
    symptom=Symptom(description="the model DPOTrainer trains has no trainable parameter; the first backward raises "
                                "RuntimeError: element 0 of tensors does not require grad",
                    no_trainable=True, exception="RuntimeError", message=r"does not require grad"),
)

WORDS = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _base(ctx):
    from benchsuite.models import tiny_llama

    return tiny_llama("causal", seed=ctx.seed, vocab_size=len(WORDS), pad_token_id=0, eos_token_id=1,
                      bos_token_id=1)


def _adapter(ctx) -> str:
    import os

    from peft import get_peft_model

    path = os.path.join(ctx.workdir, "adapter")
    if not os.path.exists(path):
        import torch

        base = _base(ctx)
        model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
        with torch.no_grad():  # an adapter that was trained before: lora_B no longer zero
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        model.save_pretrained(path)
    return path


def _train(ctx, **load_kwargs):
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    model = PeftModel.from_pretrained(_base(ctx), _adapter(ctx), **load_kwargs)
    g = torch.Generator().manual_seed(ctx.seed)

    def sent(n):
        return " ".join(f"w{int(i)}" for i in torch.randint(0, 61, (n,), generator=g))

    data = {"prompt": [sent(4) for _ in range(8)], "chosen": [sent(3) for _ in range(8)],
            "rejected": [sent(3) for _ in range(8)]}
    config = DPOConfig(output_dir=ctx.workdir + "/dpo", max_steps=2, per_device_train_batch_size=4, max_length=16,
                       learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                       disable_tqdm=True, seed=ctx.seed,
                       # DPOConfig's defaults turn on checkpointing (and bf16 where supported); off here, so
                       # that the run shows the report's failure and nothing else
                       gradient_checkpointing=False, bf16=False)

    class DPO(DPOTrainer):  # ctx.trainer_train passes TrainingArguments; DPOTrainer gets its DPOConfig
        def __init__(self, args=None, **kwargs):
            kwargs.pop("optimizers", None)
            super().__init__(args=config, processing_class=_tokenizer(), **kwargs)

    return ctx.trainer_train(model, Dataset.from_dict(data), trainer_class=DPO)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("PeftModel.from_pretrained(..., is_trainable=True)")
def is_trainable(ctx):
    return _train(ctx, is_trainable=True)
