"""trl's GRPOTrainer continuing from an adapter loaded with PeftModel.from_pretrained(): a silent no-op.

The report (trl#6700) suspected the reference adapter GRPOTrainer adds when beta != 0; the maintainers
showed the trainable-parameter count is already 0 before the trainer is built, with beta=0 too:
PeftModel.from_pretrained defaults to is_trainable=False. Steps run, rewards and losses are logged,
and the adapter never changes. Here with beta=0.01, as reported.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-grpo-adapter-loaded-frozen",
    title="GRPOTrainer on a PeftModel loaded without is_trainable=True: empty optimizer, the adapter never changes",
    references=["huggingface/trl#6700"],
    family="rl",
    tags=["trl", "grpo", "rl", "lora", "peft", "resume", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.14"},  # GRPOTrainer
    affected={},  # PeftModel.from_pretrained(is_trainable=False) is peft's default in every release
    symptom=Symptom(description="the model GRPOTrainer trains has no trainable parameter and no LoRA weight changes",
                    no_trainable=True, observed="lora_unchanged"),
)

WORDS = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # no token_type_ids: older trl passes every tokenizer output to generate(), which rejects them
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])


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


def _reward(completions, **kwargs):
    """The share of even words: varies within a group, so the advantages are not all zero."""
    def even(c):
        words = [w for w in c.split() if w.startswith("w")]
        return sum(int(w[1:]) % 2 == 0 for w in words) / max(1, len(words))
    return [even(c) for c in completions]


def _train(ctx, **load_kwargs):
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOConfig, GRPOTrainer

    model = PeftModel.from_pretrained(_base(ctx), _adapter(ctx), **load_kwargs)
    g = torch.Generator().manual_seed(ctx.seed)
    prompts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 61, (4,), generator=g)) for _ in range(8)]
    config = GRPOConfig(output_dir=ctx.workdir + "/grpo", max_steps=2, per_device_train_batch_size=4,
                        num_generations=4, generation_batch_size=4, max_completion_length=6, beta=0.01,
                        learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                        disable_tqdm=True, seed=ctx.seed)

    class GRPO(GRPOTrainer):  # ctx.trainer_train passes TrainingArguments; GRPOTrainer gets its GRPOConfig
        def __init__(self, args=None, **kwargs):
            kwargs.pop("optimizers", None)
            super().__init__(args=config, reward_funcs=_reward, processing_class=_tokenizer(), **kwargs)

    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n and ".default." in n}
    result = ctx.trainer_train(model, Dataset.from_dict({"prompt": prompts}), trainer_class=GRPO)
    after = dict(model.named_parameters())
    result.extra["lora_unchanged"] = all(torch.equal(v, after[n].detach()) for n, v in lora.items())
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("PeftModel.from_pretrained(..., is_trainable=True)")
def is_trainable(ctx):
    return _train(ctx, is_trainable=True)
