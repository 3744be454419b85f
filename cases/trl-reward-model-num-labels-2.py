"""RewardTrainer on AutoModelForSequenceClassification loaded without num_labels=1: ValueError (trl >= 0.29).

AutoModelForSequenceClassification.from_pretrained(...) defaults to num_labels=2 for a causal LM
checkpoint. RewardTrainer's loss is -log sigmoid(r_chosen - r_rejected) on `logits.squeeze(-1)`, so with two
labels it silently trained two reward columns and produced a "reward model" with two scores per sequence
(trl#653, OpenRLHF#1039: a reward head with out_features=2 found at PPO time); trl's own
path-loading code made the same mistake (trl#5066). trl 0.29 validates the head (trl#5087): a model
instance with num_labels != 1 raises ValueError "reward models require `num_labels=1`". That error is
what the trigger shows on today's releases; before 0.29 the same script trains without a word.

Fix: load/build the model with num_labels=1.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="trl-reward-model-num-labels-2",
    title="RewardTrainer: ValueError The model has `num_labels=2`, but reward models require `num_labels=1` "
          "(silently trained a 2-score head before trl 0.29)",
    references=["huggingface/trl#5087", "huggingface/trl#5066", "huggingface/trl#653",
                "OpenRLHF/OpenRLHF#1039"],
    family="rl",
    tags=["trl", "reward-model", "sequence-classification", "config", "crash"],
    requires=["trl", "datasets"],
    applies={"trl": ">=0.12"},  # processing_class (ctx.trl_train)
    affected={"trl": ">=0.29"},  # the num_labels check (trl#5087); earlier releases train the 2-column head
    symptom=Symptom(description="ValueError at RewardTrainer construction: num_labels=2, a reward model needs 1",
                    exception="ValueError", message=r"reward models require `num_labels=1`"),
)


def _train(ctx, num_labels):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    # AutoModelForSequenceClassification's default for a causal checkpoint: num_labels=2
    model = ctx.text_model("seq_cls", num_labels=num_labels)
    data = Dataset.from_dict({"chosen": ctx.sentences(8, words=5), "rejected": ctx.sentences(8, 5, seed_offset=1)})
    result = ctx.trl_train(RewardTrainer, RewardConfig, model, data, max_length=16)
    result.extra["scores_per_sequence"] = model.config.num_labels
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx, num_labels=2)


@case.fix("build/load the reward model with num_labels=1")
def one_label(ctx):
    return _train(ctx, num_labels=1)
