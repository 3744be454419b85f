"""transformers 5's apply_chat_template returns a dict: trl < 0.27.1 trains SFT on the prompt tokens.

transformers 5 changed apply_chat_template(tokenize=True) to return a BatchEncoding (input_ids,
attention_mask) instead of a list of ids (huggingface/transformers#41626). SFTTrainer before trl 0.27.1
tokenised a conversational prompt-completion row's prompt without `return_dict=False`, so `prompt_ids`
became that dict and `len(prompt_ids)` was 2, the number of keys: the completion mask marks only the first
two tokens as prompt and trains on the rest of the prompt as if it were the completion. The only sign is
trl's "Mismatch between tokenized prompt and the start of tokenized prompt+completion" warning, once per
row (trl#6105 with trl 0.24 + transformers 5.5; fixed by trl#4880, released in trl 0.27.1 and 0.28.0;
bisected with transformers 5.0.0: 0.27.0 reproduces, 0.27.1 and 0.28.0 do not).

The case prepares a conversational prompt-completion dataset with SFTTrainer and counts, in the rows the
trainer kept, the prompt tokens its completion mask marks for training (the prompt's true length is
apply_chat_template(..., return_dict=False)'s).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="sft-chat-template-dict-prompt-trained",
    title="SFTTrainer on conversational prompt-completion data with transformers 5 (trl < 0.27.1): "
          "'Mismatch between tokenized prompt...' and the prompt is trained as completion",
    references=["huggingface/trl#6105", "huggingface/trl#4880", "huggingface/transformers#41626"],
    family="api-change",
    tags=["trl", "sft", "api-change", "chat-template", "completion-only", "masking", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.20"},  # the completion_mask of prompt-completion rows
    affected={"trl": "<0.27.1", "transformers": ">=5.0"},
    fixed_in="trl 0.27.1 (return_dict=False for the prompt)",
    symptom=Symptom(description="the completion mask of prompt-completion rows covers prompt tokens: all but the "
                                "first two prompt tokens are trained on",
                    observed="prompt_tokens_trained"),
)

TEMPLATE = "{% for m in messages %}{{ m['content'] }} <eos> {% endfor %}"


def _train(ctx, pre_render=False):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = ctx.tokenizer(chat_template=TEMPLATE)
    prompts = [[{"role": "user", "content": s}] for s in ctx.sentences(8, words=8)]
    completions = [[{"role": "assistant", "content": s}] for s in ctx.sentences(8, words=3, seed_offset=1)]
    prompt_len = [len(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True,
                                                    return_dict=False)) for p in prompts]
    if pre_render:  # render the chat template to text yourself: trl tokenises plain strings with tokenizer(...)
        data = {"prompt": [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                           for p in prompts],
                "completion": [tokenizer.apply_chat_template(p + c, tokenize=False)[
                    len(tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)):]
                    for p, c in zip(prompts, completions)]}
    else:
        data = {"prompt": prompts, "completion": completions}
    seen = {}

    class Recording(SFTTrainer):  # what the trainer will train on, read before the first step
        def train(self, *args, **kwargs):
            rows = list(self.train_dataset)
            if "completion_mask" in rows[0]:  # trl < 1.x keeps the mask; newer trl builds labels from it
                trained = [sum(r["completion_mask"][:n]) for r, n in zip(rows, prompt_len)]
            else:
                trained = [sum(t != -100 for t in r["labels"][:n]) for r, n in zip(rows, prompt_len)]
            seen.update(prompt_tokens=sum(prompt_len), prompt_tokens_marked_completion=sum(trained),
                        prompt_tokens_trained=sum(trained) > 0)
            return super().train(*args, **kwargs)

    result = ctx.trl_train(Recording, SFTConfig, ctx.text_model(), Dataset.from_dict(data), tokenizer=tokenizer,
                           max_length=32)
    result.extra.update(seen)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("render the chat template to text first (prompt/completion strings): trl tokenises them with tokenizer()")
def pre_render(ctx):
    return _train(ctx, pre_render=True)
