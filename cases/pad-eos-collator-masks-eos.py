"""pad_token = eos_token with DataCollatorForLanguageModeling: every EOS label becomes -100, EOS is never learned.

The common recipe for tokenizers without a pad token (Llama, Mistral, GPT-2) sets
tokenizer.pad_token = tokenizer.eos_token. DataCollatorForLanguageModeling(mlm=False) then masks
every label equal to the pad id, which now includes each sequence's real EOS: the loss never covers
the end of a sequence, and the fine-tuned model does not learn to stop generating.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="pad-eos-collator-masks-eos",
    title="pad_token = eos_token + DataCollatorForLanguageModeling: EOS labels masked, the model never learns to stop",
    references=["huggingface/transformers#23530", "huggingface/trl#976"],
    family="data",
    tags=["data", "labels", "tokenizer", "silent"],
    affected={},  # the collator masks labels equal to pad_token_id in every release run here
    symptom=Symptom(description="no EOS position of any row carries a label (all -100): EOS never enters the loss",
                    observed="eos_never_in_loss"),
)

WORDS = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]


def _tokenizer(separate_pad: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    # the reported recipe: no pad token of its own, so pad = eos
    tokenizer.pad_token = "<pad>" if separate_pad else tokenizer.eos_token
    return tokenizer


def _train(ctx, separate_pad=False, collator="lm"):
    import torch
    from transformers import DataCollatorForLanguageModeling, DataCollatorForSeq2Seq

    from benchsuite.models import tiny_llama

    tokenizer = _tokenizer(separate_pad)
    model = tiny_llama("causal", seed=ctx.seed, vocab_size=len(WORDS), pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    g = torch.Generator().manual_seed(ctx.seed)
    texts = [" ".join(f"w{int(i)}" for i in torch.randint(0, 61, (n,), generator=g)) + " <eos>" for n in (5, 9, 7)]
    features = [tokenizer(t) for t in texts]
    if collator == "lm":
        batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)(features)
    else:  # labels made per row before padding, padding labelled -100 by the collator
        for f in features:
            f["labels"] = list(f["input_ids"])
        batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")(features)
    eos = tokenizer.eos_token_id
    real_eos = [(r, len(f["input_ids"]) - 1) for r, f in enumerate(features)]  # each row's own EOS
    assert all(int(batch["input_ids"][r, c]) == eos for r, c in real_eos)
    labelled = [int(batch["labels"][r, c]) == eos for r, c in real_eos]
    result = ctx.train(model, batch={k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
    result.extra["eos_never_in_loss"] = not any(labelled)
    result.extra["eos_labelled_rows"] = sum(labelled)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("a pad token distinct from EOS (tokenizer.add_special_tokens({'pad_token': ...}) and resize)")
def separate_pad(ctx):
    return _train(ctx, separate_pad=True)


@case.fix("labels built per row before padding (DataCollatorForSeq2Seq pads labels with -100)")
def labels_before_padding(ctx):
    return _train(ctx, collator="seq2seq")
