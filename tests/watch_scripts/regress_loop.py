"""A small MLP regression with SGD, fixed data: --lr 0.01 trains (the loss falls), --lr 0.5 is too high (the loss
grows by orders of magnitude while every value, gradient included, stays finite)."""
import argparse

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--lr", type=float, default=0.01)
ap.add_argument("--steps", type=int, default=12)
a = ap.parse_args()
torch.manual_seed(0)
x = torch.randn(64, 16)
y = x @ torch.randn(16, 1)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=a.lr)
for step in range(a.steps):
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    print(f"step {step} loss {loss.item():.4g}")
