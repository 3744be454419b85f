"""DDP: the loss's forward runs through model.module, so backward all-reduces nothing and the ranks diverge.

DistributedDataParallel arms its gradient all-reduce in its own forward() (Reducer.prepare_for_backward).
Training code that unwraps the model for the forward that produces the loss (model.module(...), or
accelerator.unwrap_model(model)(...), to reach generate() or a custom method) skips that: each rank steps
its optimizer on its local gradient only, the replicas' weights drift apart, and multi-GPU training
silently becomes N single-GPU runs on 1/N of the data each (only rank 0's copy is saved). No error, no
warning. Reproduced with two ranks under torchrun (gloo on the CPU; nccl with a GPU per rank): each rank
gets its own batch, trains 2 steps, and the ranks' parameters are compared.
"""
from benchsuite.case import Case, Symptom

case = Case(
    id="ddp-forward-through-module-no-allreduce",
    title="DDP: forward through model.module (unwrapped) skips the gradient all-reduce, ranks silently diverge",
    references=["jingyaogong/minimind#853", "moojink/openvla-oft#160"],
    family="distributed",
    tags=["ddp", "distributed", "silent"],
    affected={},  # DDP's design on every torch release
    symptom=Symptom(
        description="after 2 optimizer steps the ranks' copies of the model differ: the gradients were never "
                    "averaged across ranks",
        observed="ranks_diverged",
    ),
)


def _train_rank(ctx, through="module"):
    import torch
    import torch.distributed as dist

    model = ctx.causal_model().to(ctx.device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.local_rank] if ctx.backend == "nccl" else None)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(100 + ctx.rank)  # a DistributedSampler's job: each rank its own data
    ids = torch.randint(1, vocab, (2, 16), generator=g)
    batch = {"input_ids": ids.to(ctx.device), "attention_mask": torch.ones_like(ids).to(ctx.device),
             "labels": ids.to(ctx.device)}

    optimizer_cls = None
    if through == "module":  # as reported: model_unwrapped = model.module; loss = model_unwrapped(...)
        unwrapped = ddp.module

        def loss_fn(m, b):
            return unwrapped(**b).loss
    else:
        def loss_fn(m, b):
            return ddp(**b).loss if through == "ddp" else ddp.module(**b).loss

        if through == "manual_average":  # keep the unwrapped forward, average the gradients by hand
            class AveragedAdamW(torch.optim.AdamW):
                def step(self, closure=None):
                    for group in self.param_groups:
                        for p in group["params"]:
                            if p.grad is not None:
                                dist.all_reduce(p.grad)
                                p.grad /= dist.get_world_size()
                    return super().step(closure)

            optimizer_cls = AveragedAdamW

    result = ctx.train(model, batch=batch, steps=2, loss_fn=loss_fn, optimizer_cls=optimizer_cls)
    flat = torch.cat([p.detach().reshape(-1).float().cpu() for p in model.parameters()])
    copies = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    dist.all_gather(copies, flat)
    gap = max(float((c - copies[0]).abs().max()) for c in copies)
    result.extra.update(ranks_diverged=gap > 0, max_param_gap_between_ranks=gap)
    return result


def _run(ctx, through="module"):
    return ctx.torchrun(_train_rank, nproc=2, through=through)


@case.trigger
def trigger(ctx):
    return _run(ctx)


@case.fix("call the DDP-wrapped model for the loss's forward (model(...), not model.module(...)); unwrap only "
          "for generate() or saving")
def through_ddp(ctx):
    return _run(ctx, through="ddp")


@case.fix("average the gradients by hand before optimizer.step() (dist.all_reduce(p.grad) / world_size)")
def manual_average(ctx):
    return _run(ctx, through="manual_average")
