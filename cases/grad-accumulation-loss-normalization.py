"""Before transformers 4.46, gradient accumulation averaged per-micro-batch means.

With sequences of different lengths, batch 1 x accumulation 4 weighted tokens differently from
batch 4 x accumulation 1: each micro-batch's mean loss counted equally, whatever its token count.
4.46 passes num_items_in_batch so the accumulated loss is the mean over every token of the step.
The case trains one step each way with the real Trainer (SGD) and compares the updated weights.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="grad-accumulation-loss-normalization",
    title="Gradient accumulation (batch 1 x 4 steps) trains differently from batch 4 (transformers < 4.46)",
    references=["huggingface/transformers#34191", "huggingface/transformers#34263", "huggingface/transformers#35556"],
    family="loss",
    tags=["accumulation", "trainer", "silent"],
    affected={"transformers": "<4.46"},
    symptom=Symptom(
        description="after one optimizer step the weights differ between batch 4 x accumulation 1 and batch 1 x "
                    "accumulation 4 on sequences with different numbers of labelled tokens",
        observed="accumulation_differs",
    ),
    fixed_in="transformers 4.46 (num_items_in_batch)",
)


def _one_step(ctx, batch, accumulation):
    import torch

    torch.manual_seed(0)
    model = ctx.causal_model()
    rows = []
    g = torch.Generator().manual_seed(1)
    for i, n in enumerate([3, 9, 14, 16]):  # labelled tokens per sequence: 3 .. 16
        ids = torch.randint(1, model.config.vocab_size, (16,), generator=g)
        labels = ids.clone()
        labels[n:] = -100
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    result = ctx.trainer_train(model, rows, optimizer=opt, max_steps=1, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=accumulation, learning_rate=1.0,
                               lr_scheduler_type="constant", max_grad_norm=0.0)
    return model, result


@case.trigger
def trigger(ctx):
    import torch

    a, _ = _one_step(ctx, 4, 1)
    b, result = _one_step(ctx, 1, 4)
    diffs = [float((pa - pb).abs().max() / (pa.abs().max() + 1e-12))
             for pa, pb in zip(a.parameters(), b.parameters())]
    result.extra["max_relative_difference"] = max(diffs)
    result.extra["accumulation_differs"] = max(diffs) > 1e-3
    torch.manual_seed(0)
    return result
