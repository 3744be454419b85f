"""Fine-tuned on a chat template whose turns end with <|im_end|>, saved with the base model's eos: generation never stops.

Fine-tuning a base model on chat data usually switches the tokenizer's eos to the template's end-of-turn
token (Qwen base -> <|im_end|>, Llama 3 -> <|eot_id|>). The model's generation_config keeps the base
model's eos_token_id, and save_pretrained writes it to generation_config.json: the reloaded model emits
<|im_end|> and generate() / pipeline() keep going until max_new_tokens. Training itself looks perfect.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="chat-eos-not-in-generation-config",
    title="tokenizer.eos_token switched to the chat end-of-turn token, generation_config.json keeps the old eos: "
          "generate() never stops",
    references=["hiyouga/LlamaFactory#7454", "hiyouga/LlamaFactory#9338", "huggingface/open-r1#663",
                "huggingface/trl#3299", "axolotl-ai-cloud/axolotl#801"],
    family="data",
    tags=["data", "eos", "tokenizer", "generation-config", "save", "silent"],
    affected={},  # save_pretrained writes model.generation_config as it is in every release
    symptom=Symptom(
        description="the reloaded model emits the new eos (<|im_end|>) and generate() does not stop on it; its "
                    "generation_config.json lacks that id",
        observed="generation_ignores_new_eos",
    ),
)

TEMPLATE = "{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' <|im_end|> ' }}{% endfor %}"


def _run(ctx, fix=None):
    import os

    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, LogitsProcessor, LogitsProcessorList

    tokenizer = ctx.tokenizer(chat_template=TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"             # the chat end-of-turn token becomes eos (id 64)
    model = ctx.text_model(vocab_size=len(tokenizer))  # a base model: eos 1 in config and generation_config
    if fix == "generation_config":
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    convs = [[{"role": "w1", "content": q}, {"role": "w2", "content": a}]
             for q, a in zip(ctx.sentences(4, words=4), ctx.sentences(4, words=3, seed_offset=1))]
    rows = []
    for conv in convs:
        ids = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
        rows.append({"input_ids": list(ids), "attention_mask": [1] * len(ids), "labels": list(ids)})
    result = ctx.trainer_train(model, rows, max_steps=2, per_device_train_batch_size=4,
                               trainer_kwargs={"data_collator": DataCollatorForSeq2Seq(tokenizer)})
    path = os.path.join(ctx.workdir, f"saved-{fix}")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    reloaded = AutoModelForCausalLM.from_pretrained(path)
    new_eos = tokenizer.eos_token_id

    class EmitEos(LogitsProcessor):   # the fine-tuned model ends its answer with <|im_end|> at once
        def __call__(self, input_ids, scores):
            scores = torch.full_like(scores, -1e9)
            scores[:, new_eos] = 0.0
            return scores

    prompt = torch.tensor([rows[0]["input_ids"][:5]])
    out = reloaded.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([EmitEos()]))
    new_tokens = out.shape[1] - prompt.shape[1]
    saved_eos = reloaded.generation_config.eos_token_id
    result.extra.update(generation_ignores_new_eos=new_tokens > 1, new_tokens_generated=new_tokens,
                        saved_generation_eos=saved_eos, tokenizer_eos=new_eos)
    return result


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("model.generation_config.eos_token_id = tokenizer.eos_token_id before saving")
def sync_generation_config(ctx):
    return _run(ctx, fix="generation_config")
