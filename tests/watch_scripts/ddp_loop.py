"""Two ranks over gloo (run with torchrun). Rank 1 plants a NaN at step --nan-at (after the all-reduce).
--no-wrap: torch.distributed is initialised but the model is never wrapped in DDP, so each rank trains
its own copy on its own data."""
import argparse

import torch
import torch.distributed as dist

ap = argparse.ArgumentParser()
ap.add_argument("--nan-at", type=int, default=-1)
ap.add_argument("--no-wrap", action="store_true")
ap.add_argument("--steps", type=int, default=4)
a = ap.parse_args()

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
model = net if a.no_wrap else torch.nn.parallel.DistributedDataParallel(net)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
data = torch.Generator().manual_seed(100 + rank)   # every rank reads its own shard
for step in range(a.steps):
    loss = model(torch.randn(4, 8, generator=data)).pow(2).mean()
    loss.backward()
    if rank == 1 and step == a.nan_at:
        net[2].weight.grad[0, 0] = float("nan")
    opt.step()
    opt.zero_grad()
dist.destroy_process_group()
