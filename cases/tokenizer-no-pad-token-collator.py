"""A causal-LM tokenizer without a pad token: the data collator cannot pad the first batch.

Llama, Mistral, GPT-2 and most base-model tokenizers ship without a pad token. Any collator that pads
through tokenizer.pad() (DataCollatorForLanguageModeling, DataCollatorWithPadding, DataCollatorForSeq2Seq)
raises "ValueError: Asking to pad but the tokenizer does not have a padding token" at the first batch
of rows of different lengths. Setting the model's config.pad_token_id (the fix for the sequence-
classification variant, seqcls-no-pad-token) does not give the tokenizer one.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="tokenizer-no-pad-token-collator",
    title="ValueError: Asking to pad but the tokenizer does not have a padding token (causal-LM collator)",
    references=["dpfried/incoder#7", "vihangd/alpaca-qlora#8", "huggingface/peft#160"],
    family="data",
    tags=["data", "tokenizer", "padding", "collator", "crash"],
    affected={},
    symptom=Symptom(
        description="ValueError from tokenizer.pad() at the first batch",
        exception="ValueError",
        message=r"Asking to pad but the tokenizer does not have a padding token",
    ),
    notes="pad_token = eos_token is the usual answer and makes the batch; with DataCollatorForLanguageModeling "
          "it also masks every EOS label (see pad-eos-collator-masks-eos), so a distinct pad token is the "
          "cleaner fix.",
)


def _train(ctx, fix=None):
    from transformers import DataCollatorForLanguageModeling

    tokenizer = ctx.tokenizer(pad=False)
    model = ctx.text_model(pad_token_id=None)
    if fix == "eos":
        tokenizer.pad_token = tokenizer.eos_token
    elif fix == "model_config":
        model.config.pad_token_id = 1
    elif fix == "add_pad":
        tokenizer.add_special_tokens({"pad_token": "<pad>"})  # id 0, already in this vocabulary
        model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    rows = [tokenizer(" ".join(s.split()[:n]) + " <eos>")
            for n, s in zip((8, 5, 7, 3), ctx.sentences(4, words=8))]
    rows = [{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in rows]
    return ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4,
                             trainer_kwargs={"data_collator": DataCollatorForLanguageModeling(tokenizer, mlm=False)})


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("tokenizer.add_special_tokens({'pad_token': '<pad>'}) and model.resize_token_embeddings(len(tokenizer))")
def add_pad_token(ctx):
    return _train(ctx, fix="add_pad")


@case.fix("tokenizer.pad_token = tokenizer.eos_token",
          note="trains, but DataCollatorForLanguageModeling then masks every EOS label (pad-eos-collator-masks-eos)")
def pad_is_eos(ctx):
    return _train(ctx, fix="eos")


@case.fix("model.config.pad_token_id = eos id (circulated)", works=False,
          note="the model's config is not the tokenizer's: tokenizer.pad() still has no pad token")
def model_config_pad(ctx):
    return _train(ctx, fix="model_config")
