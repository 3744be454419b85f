"""DPOTrainer(..., beta=0.1) in code written for trl < 0.13: TypeError.

trl 0.9 moved DPO's hyper-parameters (beta, max_length, max_prompt_length, loss_type, ...) from the
DPOTrainer constructor into DPOConfig and kept the old keywords as deprecated overrides; trl 0.13 removed
them, so scripts such as MedicalGPT's dpo_training.py, the RLHFlow recipes and course notebooks that pass
`beta=` (or `max_prompt_length=`) to the trainer fail as it is built. The trigger passes beta=0.1 to the
DPOTrainer with a DPOConfig; the fix sets it on the DPOConfig.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="dpo-trainer-beta-kwarg-removed",
    title="TypeError: DPOTrainer.__init__() got an unexpected keyword argument 'beta'",
    references=["RLHFlow/Online-RLHF#32", "huggingface/trl#2853", "shibing624/MedicalGPT#438"],
    family="api-change",
    tags=["trl", "dpo", "api-change", "crash"],
    requires=["trl", "datasets"],
    affected={"trl": ">=0.13"},
    applies={"trl": ">=0.12"},  # processing_class (ctx.trl_train passes it) exists from trl 0.12
    symptom=Symptom(description="TypeError naming 'beta' when the DPOTrainer is built",
                    exception="TypeError", message=r"unexpected keyword argument 'beta'"),
)


def _train(ctx, trainer_beta=None, **config):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    data = Dataset.from_dict({"prompt": ctx.sentences(8, words=4),
                              "chosen": ctx.sentences(8, words=3, seed_offset=1),
                              "rejected": ctx.sentences(8, words=3, seed_offset=2)})
    kwargs = {"ref_model": ctx.text_model()}  # a second copy of the weights as the reference
    if trainer_beta is not None:
        kwargs["beta"] = trainer_beta  # the pre-0.13 call: hyper-parameters on the trainer
    return ctx.trl_train(DPOTrainer, DPOConfig, ctx.text_model(), data, trainer_kwargs=kwargs,
                         max_length=16, **config)


@case.trigger
def trigger(ctx):
    return _train(ctx, trainer_beta=0.1)


@case.fix("DPOConfig(beta=0.1) instead of DPOTrainer(beta=0.1)")
def beta_in_config(ctx):
    return _train(ctx, beta=0.1)
