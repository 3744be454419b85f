"""A Trainer subclass overriding compute_loss(self, model, inputs, return_outputs=False): TypeError.

transformers 4.46 (the gradient-accumulation fix) made training_step call
`self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)`. Every compute_loss override
written with the old signature, with neither that parameter nor **kwargs, fails at the first step.
The transformers thread asked for the argument to be optional; the maintainers made it optional for
`compute_loss_func` (transformers#36426) but not for a compute_loss override, so it still fails today.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="compute-loss-num-items-typeerror",
    title="TypeError: CustomTrainer.compute_loss() got an unexpected keyword argument 'num_items_in_batch'",
    references=["huggingface/transformers#36331", "sail-sg/closer-look-LLM-unlearning#1",
                "VikhrModels/effective_llm_alignment#6", "huggingface/transformers#36426"],
    family="api-change",
    tags=["trainer", "api-change", "compute_loss", "crash"],
    affected={"transformers": ">=4.46"},
    symptom=Symptom(description="TypeError naming 'num_items_in_batch' at the first training step, raised by the call "
                                "of the overridden compute_loss",
                    exception="TypeError", message=r"compute_loss\(\) got an unexpected keyword argument "
                                                   r"'num_items_in_batch'"),
)


def _loss(model, inputs, return_outputs):
    import torch.nn.functional as F

    labels = inputs.pop("labels")
    outputs = model(**inputs)
    logits = outputs.logits[:, :-1].reshape(-1, outputs.logits.size(-1))
    loss = F.cross_entropy(logits, labels[:, 1:].reshape(-1))
    return (loss, outputs) if return_outputs else loss


def _train(ctx, signature):
    from transformers import Trainer

    if signature == "old":
        class CustomTrainer(Trainer):  # as written for transformers < 4.46
            def compute_loss(self, model, inputs, return_outputs=False):
                return _loss(model, inputs, return_outputs)
    elif signature == "num_items":
        class CustomTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                return _loss(model, inputs, return_outputs)
    else:
        class CustomTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
                return _loss(model, inputs, return_outputs)

    model = ctx.causal_model()
    return ctx.trainer_train(model, ctx.dataset(model), trainer_class=CustomTrainer, max_steps=2)


@case.trigger
def trigger(ctx):
    return _train(ctx, "old")


@case.fix("add num_items_in_batch=None to the compute_loss signature")
def num_items_param(ctx):
    return _train(ctx, "num_items")


@case.fix("accept **kwargs in the compute_loss signature")
def var_kwargs(ctx):
    return _train(ctx, "kwargs")
