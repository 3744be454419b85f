"""The pure-torch scanner: the fallback when the native core is missing, and the tests' oracle."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

# (nan, posinf, neginf, zero, sumsq, absmax)
Stats = tuple


def tensor_stats(x: torch.Tensor) -> Stats:
    """Statistics of a dense real tensor, computed with plain torch ops in float64."""
    import torch
    x = x.detach()
    if x.numel() == 0:
        return (0, 0, 0, 0, 0.0, 0.0)
    if not (x.is_floating_point()):
        # Integers and booleans: never NaN or infinite.
        xd = x.to(torch.float64)
        a = xd.abs()
        return (0, 0, 0, int((x == 0).sum()), float((xd * xd).sum()), float(a.max()))
    nan = int(torch.isnan(x).sum())
    posinf = int(torch.isposinf(x).sum())
    neginf = int(torch.isneginf(x).sum())
    zero = int((x == 0).sum())
    xd = x.to(torch.float64)
    finite = torch.isfinite(xd)
    a = torch.where(finite, xd.abs(), torch.zeros((), dtype=torch.float64, device=xd.device))
    return (nan, posinf, neginf, zero, float((a * a).sum()), float(a.max()))
