"""SFTConfig(max_seq_length=...) in code written for older trl: TypeError.

trl deprecated max_seq_length in favour of max_length and removed the old name in 0.20.0 (as the
ogx-ai/ogx fix that followed it says), so fine-tuning scripts, notebooks and wrappers written before
fail when the config is built.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="sft-max-seq-length-removed",
    title="TypeError: SFTConfig.__init__() got an unexpected keyword argument 'max_seq_length'",
    references=["unslothai/unsloth#10785", "huggingface/course#1171", "ogx-ai/ogx#2948"],
    family="api-change",
    tags=["trl", "sft", "api-change", "crash"],
    requires=["trl", "datasets"],
    affected={"trl": ">=0.20"},
    symptom=Symptom(description="TypeError naming 'max_seq_length' when SFTConfig is built",
                    exception="TypeError", message=r"max_seq_length"),
)

WORDS = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]


def _train(ctx, **length):
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl import SFTConfig, SFTTrainer

    from benchsuite.models import tiny_llama

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    config = SFTConfig(output_dir=ctx.workdir + "/sft", max_steps=2, per_device_train_batch_size=2,
                       learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                       disable_tqdm=True, seed=ctx.seed, **length)
    model = tiny_llama("causal", seed=ctx.seed, vocab_size=len(WORDS), pad_token_id=0, eos_token_id=1, bos_token_id=1)
    g = torch.Generator().manual_seed(ctx.seed)
    text = [" ".join(f"w{int(i)}" for i in torch.randint(0, 61, (10,), generator=g)) for _ in range(8)]

    class SFT(SFTTrainer):  # ctx.trainer_train passes TrainingArguments; the SFTTrainer gets its SFTConfig
        def __init__(self, args=None, **kwargs):
            kwargs.pop("optimizers", None)
            super().__init__(args=config, processing_class=tokenizer, **kwargs)

    return ctx.trainer_train(model, Dataset.from_dict({"text": text}), trainer_class=SFT)


@case.trigger
def trigger(ctx):
    return _train(ctx, max_seq_length=16)


@case.fix("SFTConfig(max_length=...)")
def max_length(ctx):
    return _train(ctx, max_length=16)
