"""DPOTrainer with max_length shorter than some prompts (keep_start): those pairs train with no completion token.

DPO truncates [prompt + completion] to max_length. With truncation_mode="keep_start" (the default) a prompt
that alone fills max_length leaves no completion token: the pair's chosen and rejected log-probs are both
0 (an empty sum), its loss is exactly log 2 = 0.6931 and its gradient exactly zero, yet it is kept and counted
in every step (a full batch of such pairs logs loss 0.6931, rewards 0, margins 0 for ever; with
length-normalised losses, NaN). trl 1.9.0 (trl#6321) drops such pairs while preparing the dataset; up to
then max_prompt_length (removed with the DPO refactor of trl 0.29) was the only guard. Releases before 0.29
truncated [prompt + completion] the same way in concatenated_forward when max_prompt_length did not cap the
prompt; the case applies from 0.29 on, the releases it was run on.

The trigger: 8 pairs, 4 of whose prompts (20 words) exceed max_length=12. The flag counts the training rows
whose prompt alone fills max_length (no completion token survives keep_start truncation); with trl's
collator (>= 0.29) the evidence also counts the rows of the collated dataset (chosen and rejected sequences)
whose completion mask is all zero (8 under trl 1.8.0: the 4 long-prompt pairs, chosen and rejected).
Fixes: max_length large enough (or None), truncation_mode="keep_end" (keeps the completion's end).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-dpo-prompt-fills-max-length",
    title="DPOTrainer: prompts longer than max_length (keep_start) leave pairs with no completion token: "
          "loss log 2 = 0.6931, zero gradient, silently trained on",
    references=["huggingface/trl#6321", "huggingface/trl#5662", "huggingface/trl#3382"],
    family="rl",
    tags=["trl", "dpo", "preference", "truncation", "max_length", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.29"},  # DPOConfig without max_prompt_length (the DPO refactor, trl#3906)
    affected={"trl": "<1.9"},
    fixed_in="trl 1.9.0",
    symptom=Symptom(description="pairs whose prompt fills max_length stay in the training set: keep_start "
                                "truncation leaves them no completion token (log-probs 0, loss log 2, no gradient)",
                    observed="rows_without_completion"),
    signs=["loss-log2", "loss-flat"],  # what its training log shows (doctor --log)
)


def _train(ctx, **config):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    long_prompts = ctx.sentences(4, words=20)
    short_prompts = ctx.sentences(4, words=4, seed_offset=1)
    data = Dataset.from_dict({"prompt": long_prompts + short_prompts,
                              "chosen": ctx.sentences(8, words=3, seed_offset=2),
                              "rejected": ctx.sentences(8, words=3, seed_offset=3)})
    kw = dict(max_length=12, per_device_train_batch_size=4, max_steps=2)
    kw.update(config)
    seen = {}

    class Recording(DPOTrainer):  # the user's view: which rows the trainer kept, and what a batch carries
        def train(self, *args, **kwargs):
            rows = list(self.train_dataset)
            key = "prompt_ids" if "prompt_ids" in rows[0] else "prompt_input_ids"
            limit = self.args.max_length
            keep_start = getattr(self.args, "truncation_mode", "keep_start") == "keep_start"
            seen["train_rows"] = len(rows)
            seen["rows_without_completion"] = sum(
                limit is not None and keep_start and len(r[key]) >= limit for r in rows)
            if "completion_mask" in self.data_collator(rows[:4]):
                masks = self.data_collator(rows)["completion_mask"]
                seen["collated_rows_all_masked"] = int((masks.sum(dim=1) == 0).sum())
            return super().train(*args, **kwargs)

    # the reference: a second copy of the same weights (trl would otherwise load it from the model's hub id)
    result = ctx.trl_train(Recording, DPOConfig, ctx.text_model(), data,
                           trainer_kwargs={"ref_model": ctx.text_model()}, **kw)
    result.extra.update(seen)
    result.extra["losses"] = list(result.losses)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("max_length=None (or long enough for prompt + completion)")
def no_max_length(ctx):
    return _train(ctx, max_length=None)


@case.fix("truncation_mode='keep_end' (cut the prompt's start, keep the completion)")
def keep_end(ctx):
    return _train(ctx, truncation_mode="keep_end")
