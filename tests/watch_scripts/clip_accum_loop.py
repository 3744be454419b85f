"""A hand-written loop (no Trainer) whose first optimizer step sees the same gradient in several setups.

One batch of 8 rows, or --accum K micro-batches of 8/K (each loss divided by K), optionally through a
GradScaler (--scaler: scale 1024, unscaled by scaler.step before the optimizer's step), then
clip_grad_norm_ to --clip (0: no clipping) and an SGD step. With clipping, every variant's gradient at
the step is the same (up to fp32 rounding); without it the norm is the raw one.
--break-folder DIR: replace the folder DIR by a file before the first step (a write there then fails)."""
import argparse
import shutil

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--accum", type=int, default=1)
ap.add_argument("--clip", type=float, default=0.0)
ap.add_argument("--scaler", action="store_true")
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--break-folder", default=None)
a = ap.parse_args()

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
x, y = torch.randn(8, 6), torch.randn(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if a.scaler else None
if a.break_folder:
    shutil.rmtree(a.break_folder)
    open(a.break_folder, "w").close()
for step in range(a.steps):
    for xb, yb in zip(x.chunk(a.accum), y.chunk(a.accum)):
        loss = ((model(xb) - yb) ** 2).mean() / a.accum
        (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(opt)
    if a.clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad()
    print("step", step + 1, flush=True)
print("done")
