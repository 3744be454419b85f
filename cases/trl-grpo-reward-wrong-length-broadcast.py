"""A GRPO reward function that returns one value instead of one per completion: broadcast, nothing learns.

GRPOTrainer stored each custom reward function's output with `rewards_per_func[:, i] = torch.tensor(output)`.
A function that returns a single reward (trl#6533 shows it with `return [1.0]`; here an indentation slip,
`rewards.append(score)` after the loop, so only the last completion's score is returned) is silently
broadcast to every completion: every completion of every group gets the same reward, every advantage is 0 and the policy
never changes, with no warning. trl 1.10.0 checks the length and raises ValueError ("returned 1 rewards,
but N were expected"), as trl#6533 asked.

The flag is measured in the scenario: the reward function returned fewer rewards than it was given
completions, and training steps ran on them. In trl >= 1.10 the trainer refuses the function; the
scenario then returns that observation (the flag is false) instead of raising.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-grpo-reward-wrong-length-broadcast",
    title="GRPO reward function returns 1 reward for N completions: silently broadcast, advantages 0, "
          "the policy never changes",
    references=["huggingface/trl#6533"],
    family="rl",
    tags=["trl", "grpo", "rl", "reward", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.14"},  # GRPOTrainer
    affected={"trl": "<1.10"},  # 1.10.0 raises ValueError on a reward list of the wrong length
    fixed_in="trl 1.10.0",
    symptom=Symptom(description="the reward function returned 1 reward for every batch of N completions and "
                                "training went on (the value broadcast to all: advantages 0, weights unchanged)",
                    observed="broadcast_reward_trained"),
)


def _train(ctx, correct=False):
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    calls = []

    def reward_even(completions, **kwargs):
        """The share of even-numbered words in each completion."""
        rewards = []
        for c in completions:
            words = [w for w in c.split() if w.startswith("w")]
            score = sum(int(w[1:]) % 2 == 0 for w in words) / max(1, len(words))
            if correct:
                rewards.append(score)
        if not correct:
            rewards.append(score)  # the reported bug: appended once, after the loop
        calls.append((len(completions), len(rewards)))
        return rewards

    model = ctx.text_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = Dataset.from_dict({"prompt": ctx.sentences(8, words=4)})
    try:
        result = ctx.trl_train(GRPOTrainer, GRPOConfig, model, data, trainer_kwargs={"reward_funcs": reward_even},
                               per_device_train_batch_size=4, num_generations=4, max_completion_length=6)
    except ValueError as e:  # trl >= 1.10 refuses a reward list of the wrong length
        if "rewards, but" not in str(e):
            raise
        return ctx.observed(broadcast_reward_trained=False, refused=str(e)[:200], reward_calls=calls)
    after = dict(model.named_parameters())
    result.extra["reward_calls"] = calls  # (completions given, rewards returned) per call
    result.extra["policy_unchanged"] = all(torch.equal(v, after[n].detach()) for n, v in before.items())
    result.extra["broadcast_reward_trained"] = bool(result.losses) and any(got < given for given, got in calls)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("return one reward per completion (append inside the loop)")
def one_per_completion(ctx):
    return _train(ctx, correct=True)
