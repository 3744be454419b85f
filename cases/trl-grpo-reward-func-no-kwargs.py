"""A GRPO reward function written as `def reward(prompts, completions)`: TypeError at the first step.

GRPOTrainer calls a custom reward function with keywords only: `prompts=`, `completions=`, every other
dataset column by name (here `solution`), and since trl 0.18 `completion_ids=` (later also
`trainer_state=`, `log_extra=`, `log_metric=`). A function that names only the arguments it uses, as the
documented type alias `Callable[[list, list], list[float]]` suggests (trl#4939), fails at the first
generation step with "got an unexpected keyword argument". The fix: accept `**kwargs`.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-grpo-reward-func-no-kwargs",
    title="GRPOTrainer: reward function without **kwargs: TypeError got an unexpected keyword argument "
          "('completion_ids', a dataset column)",
    references=["huggingface/trl#4939"],
    family="rl",
    tags=["trl", "grpo", "rl", "reward", "crash"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.14"},  # GRPOTrainer
    affected={},  # the reward functions are called with keywords in every release
    symptom=Symptom(description="TypeError: reward() got an unexpected keyword argument at the first step",
                    exception="TypeError", message=r"got an unexpected keyword argument"),
)


def _overlap(completions, solution):
    return [len(set(c.split()) & set(s.split())) / len(s.split()) for c, s in zip(completions, solution)]


def reward_signature(prompts, completions):
    """The documented two-argument form: no solution column, no **kwargs."""
    return [float(len(c.split())) for c in completions]


def reward_kwargs(prompts, completions, solution, **kwargs):
    return _overlap(completions, solution)


def _train(ctx, reward):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    data = Dataset.from_dict({"prompt": ctx.sentences(8, words=4),
                              "solution": ctx.sentences(8, words=5, seed_offset=1)})
    return ctx.trl_train(GRPOTrainer, GRPOConfig, ctx.text_model(), data, trainer_kwargs={"reward_funcs": reward},
                         per_device_train_batch_size=4, num_generations=4, max_completion_length=6)


@case.trigger
def trigger(ctx):
    return _train(ctx, reward_signature)


@case.fix("def reward(prompts, completions, solution, **kwargs): name the columns used, absorb the rest")
def with_kwargs(ctx):
    return _train(ctx, reward_kwargs)
