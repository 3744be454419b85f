"""SFT on prompt-completion data with max_length shorter than the prompt: rows left with no label at all.

With completion-only loss (the default for prompt-completion datasets), only completion tokens carry
labels. SFTTrainer truncates each row to max_length from the end ("keep_start"), so a prompt longer
than max_length leaves none of its completion: the row is all prompt, every label -100. It still takes
a slot in every batch it lands in; when a whole batch is such rows the loss is NaN (logged as 0.0) and
nothing warns. TRL 1.9 (PR 6320) drops rows left fully masked by truncation.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="sft-truncation-drops-completion",
    title="SFTTrainer max_length truncates the completion away: rows with every label -100 train on nothing",
    references=["huggingface/trl#3927", "huggingface/trl#6668", "huggingface/trl#6320"],
    signs=["loss-nonfinite"],  # what its training log shows (doctor --log)
    family="data",
    tags=["data", "labels", "truncation", "completion-only", "sft", "trl", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.19"},          # prompt-completion datasets with completion_only_loss
    affected={"trl": "<1.9"},
    fixed_in="trl 1.9",
    symptom=Symptom(description="training batches hold rows whose labels are all -100 (their completion was "
                                "truncated away)", observed="fully_masked_rows"),
)


def _train(ctx, max_length=8, **config):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = ctx.tokenizer()
    model = ctx.text_model()
    long_prompts = ctx.sentences(2, words=12)        # longer than max_length on their own
    short_prompts = ctx.sentences(2, words=3, seed_offset=1)
    completions = ctx.sentences(4, words=3, seed_offset=2)
    rows = [{"prompt": p, "completion": " " + c} for p, c in zip(long_prompts + short_prompts, completions)]
    seen = []

    class Recording(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            labels, mask = inputs["labels"], inputs["attention_mask"]
            seen.extend(bool(((labels == -100) | (mask == 0)).all()) for labels, mask in zip(labels, mask))
            return super().compute_loss(model, inputs, *args, **kwargs)

    Recording.__name__ = "SFTTrainer"
    result = ctx.trl_train(Recording, SFTConfig, model, Dataset.from_list(rows), tokenizer=tokenizer,
                           max_length=max_length, **config)
    result.extra.update(fully_masked_rows=any(seen), rows_seen=len(seen), fully_masked=sum(seen))
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("max_length long enough for prompt + completion")
def longer_max_length(ctx):
    return _train(ctx, max_length=32)


@case.fix("SFTConfig(truncation_mode='keep_end'): cut the prompt's start, keep the completion",
          applies={"trl": ">=1.0"})
def keep_end(ctx):
    return _train(ctx, truncation_mode="keep_end")
