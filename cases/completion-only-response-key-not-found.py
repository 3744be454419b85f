"""DataCollatorForCompletionOnlyLM: the response template tokenizes differently in context, every label is -100.

The collator finds the answer by searching each row's token ids for the ids of `response_template`,
which it tokenizes ALONE. SentencePiece-style tokenizers (Llama 2, Mistral) tokenize the same text
differently at the start of a string ("▁###") than after a newline ("\n", "###"), so the ids are never
found: the collator warns "Could not find response key ... in the following instance", sets the whole
row to -100, and the run trains on nothing (loss NaN or 0, weights barely move). The documented fix is
to pass the template's ids as they appear in context: encode("\n### Answer:")[2:].
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="completion-only-response-key-not-found",
    title="DataCollatorForCompletionOnlyLM: 'Could not find response key ... in the following instance', "
          "every label -100",
    references=["huggingface/trl#1820", "huggingface/trl#588", "huggingface/trl#619", "huggingface/trl#1183",
                "huggingface/trl#989"],
    signs=["loss-nonfinite", "loss-zero"],  # what its training log shows (doctor --log)
    family="data",
    tags=["data", "labels", "collator", "completion-only", "tokenizer", "trl", "silent"],
    requires=["trl"],
    applies={"trl": ">=0.6,<0.20"},  # 0.5 raised RuntimeError instead; the collator was removed in 0.20
    affected={},
    symptom=Symptom(
        description="UserWarning 'Could not find response key'; every label of every row is -100",
        warning=r"Could not find response key",
        observed="all_labels_masked",
    ),
)

WORDS = [f"w{i}" for i in range(40)]


def _tokenizer():
    """A small Llama-2-like BPE (trained here, offline): '▁' marks a word start, '\\n' is its own token."""
    import random

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [f"### Question: {' '.join(rng.choice(WORDS) for _ in range(4))}\n"
              f"### Answer: {' '.join(rng.choice(WORDS) for _ in range(3))}" for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("▁", behavior="merged_with_next"),
                                                 pre_tokenizers.Split("\n", behavior="isolated")])
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, show_progress=False,
                                                        special_tokens=["<pad>", "<eos>", "<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", model_input_names=["input_ids", "attention_mask"])


def _train(ctx, template="string"):
    import random

    from trl import DataCollatorForCompletionOnlyLM

    tokenizer = _tokenizer()
    model = ctx.text_model(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    rng = random.Random(ctx.seed + 1)
    texts = [f"### Question: {' '.join(rng.choice(WORDS) for _ in range(n))}\n"
             f"### Answer: {' '.join(rng.choice(WORDS) for _ in range(3))}" for n in (4, 6, 5, 3)]
    rows = [{"input_ids": tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]} for t in texts]
    if template == "string":          # the reported call
        response_template = "### Answer:"
    elif template == "newline":       # circulated: include the newline in the string
        response_template = "\n### Answer:"
    else:                              # the documented fix: the ids as tokenized in context
        response_template = tokenizer.encode("\n### Answer:", add_special_tokens=False)[2:]
    collator = DataCollatorForCompletionOnlyLM(response_template, tokenizer=tokenizer)
    labels = collator([dict(r) for r in rows])["labels"]
    masked = bool((labels == -100).all())
    result = ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4,
                               trainer_kwargs={"data_collator": collator})
    result.extra.update(all_labels_masked=masked, labelled_tokens=int((labels != -100).sum()),
                        response_template_ids=collator.response_token_ids)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("response_template as token ids tokenized in context: tokenizer.encode('\\n### Answer:')[2:]")
def template_ids_in_context(ctx):
    return _train(ctx, template="ids")


@case.fix("put the newline in the template string: '\\n### Answer:' (circulated)", works=False,
          note="the string is still tokenized alone: it starts with a '▁' token the row never has")
def newline_in_string(ctx):
    return _train(ctx, template="newline")
