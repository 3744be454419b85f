"""Two ranks with DDP over gloo (run with torchrun); rank 1 plants a NaN at step 2."""

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(
    torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(4):
    loss = model(torch.randn(4, 8)).pow(2).mean()
    loss.backward()
    if rank == 1 and step == 2:
        model.module[2].weight.grad[0, 0] = float("nan")  # after the all-reduce: this rank only
    opt.step()
    opt.zero_grad()
dist.destroy_process_group()
