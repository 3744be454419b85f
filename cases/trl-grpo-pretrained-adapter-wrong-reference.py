"""GRPO (beta > 0) continuing from a trained LoRA adapter: the KL reference is the base model, not the adapter.

With a PeftModel and no ref_model, GRPOTrainer computed the reference log-probs by disabling the adapter.
That is the starting policy only when the adapter is freshly initialised (lora_B = 0). For an SFT adapter
loaded to be trained further, the reference becomes the base model: the KL is already large at the first
step, where policy and reference should coincide, and the KL penalty pulls the policy back towards the
base model, undoing the SFT (trl#1340 for PPOTrainer: "very high starting KL and unstable training"; the
same in DPO and GRPO). trl 0.27 (trl#4723) clones the adapter as a frozen "ref" adapter for GRPO and RLOO
(DPO followed in 0.29 with its refactor).

The flag: the KL GRPOTrainer logs for the first step (before any update, so policy == its starting point)
is not 0. Fix: merge the SFT adapter into the base model, save it, and train a fresh adapter on it (then
"adapter disabled" is the SFT model).
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-grpo-pretrained-adapter-wrong-reference",
    title="GRPOTrainer on a trained PeftModel with beta > 0: reference = base model (adapter disabled), "
          "KL non-zero from the first step",
    references=["huggingface/trl#1340", "huggingface/trl#4723", "huggingface/trl#6591"],
    family="rl",
    tags=["trl", "grpo", "rl", "lora", "peft", "kl", "reference-model", "silent"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.14"},  # GRPOTrainer
    affected={"trl": "<0.27"},
    fixed_in="trl 0.27.0",
    symptom=Symptom(description="the KL to the reference logged at the first step (policy not yet updated) is "
                                "far from 0: the reference is the base model, not the starting adapter",
                    observed="first_step_kl_nonzero"),
)


def _reward(completions, **kwargs):
    def even(c):
        words = [w for w in c.split() if w.startswith("w")]
        return sum(int(w[1:]) % 2 == 0 for w in words) / max(1, len(words))
    return [even(c) for c in completions]


def _train(ctx, merged=False):
    import os

    from datasets import Dataset
    from peft import PeftModel, get_peft_model
    from trl import GRPOConfig, GRPOTrainer

    adapter = ctx.saved_adapter()  # the SFT adapter, trained before
    if merged:  # merge it, save that model, train a fresh adapter on top
        from transformers import AutoModelForCausalLM
        path = os.path.join(ctx.workdir, "sft-merged")
        if not os.path.exists(path):
            PeftModel.from_pretrained(ctx.text_model(), adapter).merge_and_unload().save_pretrained(path)
        base = AutoModelForCausalLM.from_pretrained(path)
        model = get_peft_model(base, ctx.lora_config(base, "CAUSAL_LM"))
    else:
        model = PeftModel.from_pretrained(ctx.text_model(), adapter, is_trainable=True)
    logs = []

    class Logged(GRPOTrainer):  # keeps what the trainer logged (metrics are merged into the log inside log())
        def train(self, *args, **kwargs):
            output = super().train(*args, **kwargs)
            logs.extend(self.state.log_history)
            return output

    data = Dataset.from_dict({"prompt": ctx.sentences(8, words=4)})
    result = ctx.trl_train(Logged, GRPOConfig, model, data, trainer_kwargs={"reward_funcs": _reward},
                           per_device_train_batch_size=4, num_generations=4, max_completion_length=6, beta=0.04)
    kls = [e["kl"] for e in logs if "kl" in e]
    result.extra["logged_kl"] = kls
    result.extra["first_step_kl_nonzero"] = bool(kls) and abs(kls[0]) > 1e-4
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("merge the SFT adapter, save the merged model, train a fresh adapter on it")
def merged(ctx):
    return _train(ctx, merged=True)
