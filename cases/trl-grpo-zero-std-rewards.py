"""GRPO whose rewards never differ inside a prompt's group: every advantage is 0, nothing trains.

GRPO's advantage is the reward minus its group's mean (then divided by the group's std). When every
completion of a prompt gets the same reward (an exact-match accuracy reward that no completion of a
weak model ever earns, plus format rewards every completion satisfies), each advantage is exactly 0:
the policy term and its gradient vanish, and with the reference equal to the policy the KL term's
gradient vanishes too. The logs show loss 0.0, grad_norm 0.0, frac_reward_zero_std 1.0, while the
per-function reward std over the batch can be non-zero (trl#3857's confusion: that std is across prompts).
trl#5697 is the same with every completion cut at max_completion_length: accuracy reward 0 for all.

The trigger has two reward functions as in trl#3857: a format reward every completion satisfies and a
per-prompt "difficulty" reward (read from a dataset column), which varies across prompts but never inside
a group; the exact-match accuracy reward the tiny model never earns adds 0. Fixes: a graded reward
that separates completions of the same prompt (works, as in ms-swift#4547); scale_rewards="batch"
or no scaling, and beta > 0 (circulated; neither helps: the group mean is still subtracted, and the KL
gradient is zero while the policy equals the reference).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-grpo-zero-std-rewards",
    title="GRPO: rewards identical within every group (frac_reward_zero_std 1.0): advantages 0, loss 0.0, "
          "grad_norm 0.0, the policy never changes",
    references=["huggingface/trl#3857", "modelscope/ms-swift#4570", "modelscope/ms-swift#4547",
                "huggingface/trl#5697"],
    signs=["loss-zero", "grad-norm-zero"],  # what its training log shows (doctor --log)
    family="rl",
    tags=["trl", "grpo", "rl", "reward", "advantage", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.14"},  # GRPOTrainer
    affected={},  # group-mean-centred advantages: the same in every release
    symptom=Symptom(description="every reward group has zero std; no policy weight changes over the steps "
                                "(exactly zero gradient), the logged loss is 0",
                    observed="policy_unchanged", unchanged=r"layers"),
)


def _reward_format(completions, **kwargs):
    """1.0 for every completion that is made of vocabulary words: every completion here."""
    return [1.0 if all(w.startswith("w") or w.startswith("<") for w in c.split()) else 0.0 for c in completions]


def _reward_exact(completions, answer, difficulty, **kwargs):
    """1.0 for the exact answer (never produced by the tiny model), plus a per-prompt bonus: the same for the
    whole group, so it varies over the batch (non-zero batch std) but not within a group."""
    return [float(c.strip() == a) - d for c, a, d in zip(completions, answer, difficulty)]


def _reward_graded(completions, answer, **kwargs):
    """Partial credit: the share of the answer's words the completion contains; differs inside a group."""
    return [len(set(c.split()) & set(a.split())) / len(a.split()) for c, a in zip(completions, answer)]


def _train(ctx, graded=False, **config):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model = ctx.text_model()
    if config.get("beta"):  # trl builds the reference from the model's path: give it one
        import os

        from transformers import AutoModelForCausalLM
        path = os.path.join(ctx.workdir, "policy")
        model.save_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    prompts = ctx.sentences(8, words=4)
    answers = ctx.sentences(8, words=6, seed_offset=1)
    data = Dataset.from_dict({"prompt": prompts, "answer": answers,
                              "difficulty": [float(i % 4) for i in range(8)]})
    reward_funcs = [_reward_format, _reward_graded if graded else _reward_exact]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    kw = dict(per_device_train_batch_size=4, num_generations=4, max_completion_length=6, max_steps=2,
              learning_rate=1e-2, temperature=1.0)
    kw.update(config)
    result = ctx.trl_train(GRPOTrainer, GRPOConfig, model, data,
                           trainer_kwargs={"reward_funcs": reward_funcs}, **kw)
    import torch
    after = dict(model.named_parameters())
    result.extra["policy_unchanged"] = all(torch.equal(v, after[n].detach()) for n, v in before.items())
    result.extra["losses"] = list(result.losses)
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("a graded reward that tells completions of the same prompt apart (partial credit)")
def graded(ctx):
    return _train(ctx, graded=True)


@case.fix("scale_rewards='batch' (normalise by the batch std instead of the group's)", works=False,
          applies={"trl": ">=0.22"},
          note="the group mean is still subtracted: a reward constant within the group gives advantage 0")
def batch_scale(ctx):
    return _train(ctx, scale_rewards="batch")


@case.fix("beta > 0 (add the KL term so the loss is not 0)", works=False,
          note="the KL to a reference equal to the policy has a zero gradient: nothing moves the policy off it")
def kl_beta(ctx):
    return _train(ctx, beta=0.1)
