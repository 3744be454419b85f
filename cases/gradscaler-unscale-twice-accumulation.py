"""fp16 AMP with gradient accumulation: "unscale_() has already been called on this optimizer since the last update()".

A training loop that clips gradients on every micro-batch (scaler.unscale_(optimizer) then
clip_grad_norm_) while it steps the optimizer only every N micro-batches calls unscale_ a second time
before scaler.step()/scaler.update() have run: GradScaler raises at the second micro-batch. The same
happens with accelerate when accelerator.clip_grad_norm_ is called inside accelerator.accumulate()
on every micro-batch, and it was the error of the Trainer-based fine-tuning scripts of mid-2023 with
gradient_accumulation_steps > 1. Unscaling once, at the accumulation boundary, is the fix. Reproduced
on the CPU with torch.amp.GradScaler("cpu") and float16 autocast.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="gradscaler-unscale-twice-accumulation",
    title="GradScaler + gradient accumulation: unscale_() has already been called on this optimizer since the last update()",
    references=["microsoft/Swin-Transformer#311", "huggingface/accelerate#641", "hiyouga/LlamaFactory#77",
                "hiyouga/ChatGLM-Efficient-Tuning#175", "huggingface/transformers#24840"],
    family="mixed-precision",
    tags=["mixed-precision", "fp16", "gradscaler", "accumulation", "crash"],
    affected={},  # torch's GradScaler refuses a second unscale_ before update() in every release
    symptom=Symptom(
        description="RuntimeError: unscale_() has already been called on this optimizer since the last update(), "
                    "at the second micro-batch of the first accumulation window",
        exception="RuntimeError",
        message=r"unscale_\(\) has already been called on this optimizer since the last update\(\)",
    ),
)


def _train(ctx, accumulation=4, clip_every_micro_batch=True, steps=2, max_norm=1.0):
    import torch

    from benchsuite.gradscan import scan
    from benchsuite.scenario import TrainResult, _current_result

    torch.manual_seed(ctx.seed)
    model = ctx.causal_model()
    model.train()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    result = TrainResult(trainable=[n for n, _ in named])
    _current_result[0] = result
    before = {n: p.detach().clone() for n, p in named}
    opt = torch.optim.AdamW(params, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    micro_batches = [ctx.batch(model, batch_size=1) for _ in range(accumulation)]
    for step in range(steps):
        total = 0.0
        for batch in micro_batches:
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(**batch).loss / accumulation
            scaler.scale(loss).backward()
            total += float(loss.detach())
            if clip_every_micro_batch:  # the reported loop: clip inside the accumulation window
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not clip_every_micro_batch:  # once per optimizer step, right before scaler.step
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        result.reports.append(scan(model, step=step))
        result.losses.append(total)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    result.changed = {n: not torch.equal(before[n], p.detach()) for n, p in named}
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("unscale_ and clip once per optimizer step, at the accumulation boundary "
          "(accelerate: only when accelerator.sync_gradients)")
def clip_at_boundary(ctx):
    return _train(ctx, clip_every_micro_batch=False)


@case.fix("gradient_accumulation_steps=1 (circulated workaround)",
          note="no second unscale_ can happen, at the cost of the larger effective batch it was meant to give")
def no_accumulation(ctx):
    return _train(ctx, accumulation=1, steps=2)
