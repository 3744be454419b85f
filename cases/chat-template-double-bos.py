"""Chat-template text tokenized again with special tokens: every training row starts with two BOS tokens.

A chat template that renders {{ bos_token }} (Llama 3, Gemma, Mistral) already puts BOS in the text
that apply_chat_template(..., tokenize=False) returns. Passing that text to SFTTrainer as a plain "text"
dataset (or to tokenizer(text) in one's own preprocessing) tokenizes it with add_special_tokens=True,
and the tokenizer's post-processor prepends a second BOS. The model is fine-tuned on "<bos><bos>..."
rows but prompted with one BOS at inference. Nothing warns.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="chat-template-double-bos",
    title="apply_chat_template(tokenize=False) text re-tokenized by SFTTrainer: double BOS in every row",
    references=["huggingface/trl#1400", "OpenRLHF/OpenRLHF#393", "unslothai/unsloth#2648",
                "YangRui2015/Generalizable-Reward-Model#6", "huggingface/trl#1114"],
    family="data",
    tags=["data", "chat-template", "tokenizer", "bos", "sft", "trl", "silent"],
    affected={},  # trl tokenizes a "text" column with the tokenizer's special tokens (checked on 1.16.0)
    requires=["trl", "datasets"],
    symptom=Symptom(description="the batches SFTTrainer trains on start with BOS twice",
                    observed="double_bos"),
)

TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' <eos>' }}"
            "{% endfor %}")


def _tokenizer(ctx):
    from tokenizers.processors import TemplateProcessing

    tokenizer = ctx.tokenizer(chat_template=TEMPLATE)
    tokenizer.add_special_tokens({"bos_token": "<s>"})  # id 64; the post-processor prepends it, as Llama's does
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return tokenizer


def _train(ctx, data="rendered_text"):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = _tokenizer(ctx)
    model = ctx.text_model(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id)
    convs = [[{"role": "w1", "content": q}, {"role": "w2", "content": a}]
             for q, a in zip(ctx.sentences(4, words=5), ctx.sentences(4, words=3, seed_offset=1))]
    if data == "rendered_text":      # the reported preprocessing
        rows = [{"text": tokenizer.apply_chat_template(c, tokenize=False)} for c in convs]
    elif data == "strip_bos":        # render, then drop the template's BOS (the tokenizer adds it)
        rows = [{"text": tokenizer.apply_chat_template(c, tokenize=False).removeprefix(tokenizer.bos_token)}
                for c in convs]
    else:                             # conversational dataset: SFTTrainer applies the template itself
        rows = [{"messages": c} for c in convs]
    seen = []

    class Recording(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            seen.append(inputs["input_ids"][:, :2].tolist())
            return super().compute_loss(model, inputs, *args, **kwargs)

    Recording.__name__ = "SFTTrainer"
    result = ctx.trl_train(Recording, SFTConfig, model, Dataset.from_list(rows), tokenizer=tokenizer)
    bos = tokenizer.bos_token_id
    firsts = [pair for batch in seen for pair in batch]
    result.extra.update(double_bos=any(pair == [bos, bos] for pair in firsts), first_two_ids=firsts[:4])
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("give SFTTrainer the conversations as a 'messages' dataset (it tokenizes the template itself)")
def messages_dataset(ctx):
    return _train(ctx, data="messages")


@case.fix("strip the template's BOS from the rendered text before training")
def strip_bos(ctx):
    return _train(ctx, data="strip_bos")
