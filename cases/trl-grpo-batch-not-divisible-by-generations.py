"""GRPO with per_device_train_batch_size=1 and num_generations=4: ValueError, not divisible.

Since trl 0.15 (trl#2776) GRPO's per_device_train_batch_size counts completions, not prompts: a batch must
hold whole groups of num_generations completions. The common single-GPU setting (batch 1, 8 or 16
generations, gradient accumulation for the rest) then fails before training: "The global train batch
size (1 x 1) must be evenly divisible by the number of generations per prompt (8)" (trl 0.15-0.17), "The
effective train batch size ... must be evenly divisible ..." (0.18+), "generation_batch_size (1) must be
divisible by num_generations (4)" (later). trl 0.14 counted prompts and had no such check.

Fixes: per_device_train_batch_size a multiple of num_generations (always); raising
gradient_accumulation_steps works only from trl 0.18, where a generation batch spans the accumulated
steps (steps_per_generation); in 0.15-0.17 the check looked at the per-step batch alone (trl#2858).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-grpo-batch-not-divisible-by-generations",
    title="GRPOTrainer: ValueError the global train batch size (1 x 1) must be evenly divisible by the number "
          "of generations per prompt",
    references=["huggingface/open-r1#249", "huggingface/trl#2858", "huggingface/trl#2876",
                "modelscope/ms-swift#3980"],
    family="rl",
    tags=["trl", "grpo", "rl", "batch-size", "config", "crash"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.14"},  # GRPOTrainer
    affected={"trl": ">=0.15"},  # 0.15 made per_device_train_batch_size count completions (trl#2776)
    symptom=Symptom(description="ValueError: the batch of completions is not a multiple of num_generations",
                    exception="ValueError",
                    message=r"divisible by (the number of generations|num_generations)"),
)


def _train(ctx, **config):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    def reward_len(completions, **kwargs):
        return [float(len(c.split())) for c in completions]

    kw = dict(per_device_train_batch_size=1, num_generations=4, max_completion_length=6)
    kw.update(config)
    data = Dataset.from_dict({"prompt": ctx.sentences(8, words=4)})
    return ctx.trl_train(GRPOTrainer, GRPOConfig, ctx.text_model(), data,
                         trainer_kwargs={"reward_funcs": reward_len}, **kw)


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("per_device_train_batch_size=4 (a multiple of num_generations)")
def batch_multiple(ctx):
    return _train(ctx, per_device_train_batch_size=4)


@case.fix("gradient_accumulation_steps=4 (one generation batch spans the accumulated steps)",
          applies={"trl": ">=0.18"})
def accumulate(ctx):
    return _train(ctx, gradient_accumulation_steps=4)


@case.fix("gradient_accumulation_steps=4 before trl 0.18", works=False, applies={"trl": "<0.18"},
          note="trl 0.15-0.17 check the per-step global batch (processes x per-device batch) alone")
def accumulate_old(ctx):
    return _train(ctx, gradient_accumulation_steps=4)
