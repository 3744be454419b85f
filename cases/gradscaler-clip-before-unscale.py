"""fp16 AMP loop that clips the gradients before scaler.unscale_: clipping acts on the scaled gradients.

After scaler.scale(loss).backward() the gradients are multiplied by the loss scale (65536 at first).
clip_grad_norm_(params, 1.0) called there sees a norm of about 65536 x the real one, clips it to 1.0,
and scaler.step() then divides by the scale: the optimizer gets gradients of norm 1/65536 instead
of min(real norm, 1.0). Nothing fails; the logged grad norm is in the hundreds of thousands and, with
SGD, training effectively stops (adaptive optimizers are distorted less visibly). The loop has to call
scaler.unscale_(optimizer) before clipping (the AMP recipe's "working with unscaled gradients").
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="gradscaler-clip-before-unscale",
    title="fp16 AMP: clip_grad_norm_ before scaler.unscale_ clips the scaled gradients, updates shrink 65536x",
    references=["milesial/Pytorch-UNet#468", "pytorch/examples#1196", "victorchall/EveryDream2trainer#175",
                "rwth-i6/returnn#1595"],
    family="mixed-precision",
    tags=["mixed-precision", "fp16", "gradscaler", "clipping", "silent"],
    affected={},  # a usage pattern: torch cannot tell scaled from unscaled gradients
    symptom=Symptom(
        description="clip_grad_norm_ returns norms of ~1e5 (the scaled gradients) and the gradient the optimizer "
                    "applies has a norm of ~1/65536 instead of min(real norm, max_norm)",
        observed="clipped_scaled_gradients",
    ),
)


def _train(ctx, unscale_first=False, steps=3, max_norm=1.0):
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
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu")
    batch = ctx.batch(model)
    clip_norms, applied, real = [], [], []
    for step in range(steps):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        if unscale_first:
            scaler.unscale_(opt)
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))  # what a loop logs as grad_norm
        clip_norms.append(norm)
        real.append(norm if unscale_first else norm / scale)  # the norm of the true gradient
        result.reports.append(scan(model, step=step))
        result.losses.append(float(loss.detach()))
        scaler.step(opt)  # unscales (if not done yet) and steps
        # after step() the gradients are the ones the optimizer applied
        applied.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad)
                                                                    for p in params]))))
        scaler.update()
        opt.zero_grad(set_to_none=True)
    result.changed = {n: not torch.equal(before[n], p.detach()) for n, p in named}
    intended = [min(r, max_norm) for r in real]
    result.extra.update(clip_returned_norms=clip_norms, true_grad_norms=real, applied_grad_norms=applied,
                        intended_grad_norms=intended)
    result.extra["clipped_scaled_gradients"] = any(a < 0.01 * i for a, i in zip(applied, intended))
    return result


@case.trigger
def trigger(ctx):
    return _train(ctx)


@case.fix("scaler.unscale_(optimizer) before clip_grad_norm_ (then scaler.step does not unscale again)")
def unscale_first(ctx):
    return _train(ctx, unscale_first=True)
