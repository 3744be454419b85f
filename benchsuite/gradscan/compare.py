"""compare(): do two ways of running a model give it the same gradients?

>>> from benchsuite.gradscan import compare
>>> def plain():
...     model = build(); model(**batch).loss.backward(); return model
>>> def checkpointed():
...     model = build(); model.gradient_checkpointing_enable(); model(**batch).loss.backward(); return model
>>> report = compare(plain, checkpointed)
>>> report.ok, report.differing          # False, ['model.embed_tokens.weight', ...]
>>> print(report.summary())

``run_a`` is the reference. Both callables run from the same RNG state (torch's CPU and CUDA
generators, Python's ``random``, NumPy's when imported) and each returns the module whose trainable
parameters' ``.grad`` to read. They are compared parameter by parameter, by name (wrappers'
``_checkpoint_wrapped_module.``, ``_orig_mod.`` and a leading ``module.`` are ignored): cosine and
relative error ``||b - a|| / ||a||``. A parameter matches when its relative error is at most
``rtol`` (the cosine is then at least ``1 - rtol**2 / 2``). Differences: a gradient that is None on
one side only, a non-finite gradient, a relative error above ``rtol``, a parameter on one side only.
A parameter without a gradient on both sides is reported (``both_none``) but is not a difference.

``method="exact"`` keeps a copy of run_a's gradients (on the CPU) and compares exactly;
``method="signature"`` keeps only a 128-number signature per parameter (``benchsuite.gradscan.signature``)
and estimates both figures, for models whose gradients do not fit twice in memory. After reading
run_a's gradients, compare sets them to None, so that a callable that returns the same module starts
from none; run_b's are left in place.

Tolerances (``TOLERANCES``), measured in docs/results/ (see README, "Memory and throughput"): fp32 (an
option that only changes the order of fp32 rounding: checkpointing, token-weighted accumulation) 1e-3;
fp16 with GradScaler 0.02 and bf16 0.1 (autocast, against an fp32 reference).
"""
from __future__ import annotations

import math
import random
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

from . import signature as _sig
from ._scan import named_trainable

# Relative-error bounds per precision of the compared run, against an fp32 reference. Measured worst
# per-parameter relative errors of healthy options (docs/results/bench-cpu-tiny-llama-*.md,
# bench-cpu-fp16.md, signature-error-cpu.md; README, "Memory and throughput"): fp32 checkpointing 0
# (bit-identical on the CPU), fp32 token-weighted accumulation < 1e-6, fp16 with GradScaler ~3e-3,
# bf16 autocast 0.015-0.023. Each bound is >= 4x above those and below what the failures give
# (per-micro-batch-mean accumulation on unequal lengths 0.2-1.4, reentrant checkpointing of keyword
# inputs 0.32, None on one side).
TOLERANCES = {"fp32": 1e-3, "fp16": 0.02, "bf16": 0.1}

_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def normalise_name(name: str) -> str:
    """A parameter's name without the segments that wrappers insert (checkpoint_wrapper, compile, DDP)."""
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name[len("module."):] if name.startswith("module.") else name


@dataclass
class ParamComparison:
    """One parameter in both runs. ``cosine``/``rel_error`` are None when they cannot be computed."""

    name: str
    numel: int
    matches: bool
    cosine: float | None = None
    rel_error: float | None = None
    norm_a: float | None = None
    norm_b: float | None = None
    none_a: bool = False
    none_b: bool = False
    nonfinite_a: int = 0
    nonfinite_b: int = 0
    reason: str = ""  # why it differs ("" when it matches)

    @property
    def both_none(self) -> bool:
        return self.none_a and self.none_b

    @property
    def none_one_side(self) -> bool:
        return self.none_a != self.none_b

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CompareReport:
    records: list[ParamComparison]
    rtol: float
    method: str  # "exact" or "signature"
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, name: str) -> ParamComparison:
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def differing(self) -> list[str]:
        """Names beyond tolerance (None on one side, non-finite, relative error above rtol), then
        the parameters present in one run only."""
        return [r.name for r in self.records if not r.matches] + self.only_in_a + self.only_in_b

    @property
    def ok(self) -> bool:
        return not self.differing

    @property
    def no_grad_mismatch(self) -> list[str]:
        return [r.name for r in self.records if r.none_one_side]

    @property
    def both_none(self) -> list[str]:
        return [r.name for r in self.records if r.both_none]

    @property
    def compared(self) -> list[ParamComparison]:
        return [r for r in self.records if r.cosine is not None]

    @property
    def min_cosine(self) -> float | None:
        vals = [r.cosine for r in self.compared if r.cosine is not None]
        return min(vals) if vals else None

    @property
    def max_rel_error(self) -> float | None:
        vals = [r.rel_error for r in self.compared if r.rel_error is not None]
        return max(vals) if vals else None

    @property
    def worst(self) -> str | None:
        """The differing parameter that differs most (None on one side and non-finite first), else the
        parameter of the largest relative error."""
        bad = [r for r in self.records if not r.matches]
        pool = bad or self.compared
        if not pool:
            return None
        return max(pool, key=lambda r: (r.none_one_side or r.nonfinite_a + r.nonfinite_b > 0,
                                        r.rel_error if r.rel_error is not None else math.inf)).name

    def summary(self) -> str:
        head = (f"{len(self.records)} parameter(s) compared ({self.method}, rtol {self.rtol:g}): "
                f"min cosine {_fmt(self.min_cosine)}, max relative error {_fmt(self.max_rel_error)}")
        if self.both_none:
            head += f"; {len(self.both_none)} without a gradient in both runs"
        if self.ok:
            return head + "; gradients match"
        lines = [head + f"; {len(self.differing)} differ:"]
        for r in self.records:
            if not r.matches:
                lines.append(f"  {r.name}: {r.reason}")
        lines += [f"  {n}: trainable in run_a only" for n in self.only_in_a]
        lines += [f"  {n}: trainable in run_b only" for n in self.only_in_b]
        return "\n".join(lines)

    def to_dict(self, baseline: str | None = None, records: bool = True) -> dict:
        d = {"matches": self.ok, "method": self.method, "rtol": self.rtol, "min_cosine": self.min_cosine,
             "max_rel_error": self.max_rel_error, "worst": self.worst, "no_grad_mismatch": self.no_grad_mismatch,
             "differing": self.differing, "both_none": self.both_none}
        if baseline is not None:
            d = {"baseline": baseline, **d}
        if records:
            d["records"] = [r.to_dict() for r in self.records]
        return d


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _judge(name: str, numel: int, rtol: float, none_a: bool, none_b: bool, bad_a: int, bad_b: int,
           na2: float, nb2: float, d2: float | None) -> ParamComparison:
    r = ParamComparison(name=name, numel=numel, matches=True, none_a=none_a, none_b=none_b,
                        nonfinite_a=bad_a, nonfinite_b=bad_b)
    if none_a or none_b:
        if none_a != none_b:
            r.matches = False
            r.reason = "no gradient in run_b" if none_b else "no gradient in run_a"
        return r
    r.norm_a, r.norm_b = math.sqrt(na2), math.sqrt(nb2)
    if bad_a or bad_b:
        r.matches = False
        r.reason = f"non-finite values: {bad_a} in run_a, {bad_b} in run_b"
        return r
    assert d2 is not None  # None only where a side has no gradient (returned above)
    r.rel_error, r.cosine = _sig._metrics(na2, nb2, d2)
    if not r.rel_error <= rtol:
        r.matches = False
        r.reason = f"relative error {r.rel_error:.3g} > {rtol:g} (cosine {r.cosine:.4f})"
    return r


def _finite_f64(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    import torch
    x = t.detach().reshape(-1).to(torch.float64)
    fin = torch.isfinite(x)
    bad = int(x.numel() - fin.sum())
    return (torch.where(fin, x, 0.0) if bad else x), bad


def compare_gradients(a: dict[str, torch.Tensor | None], b: dict[str, torch.Tensor | None], *,
                      rtol: float = TOLERANCES["fp32"]) -> CompareReport:
    """Exact comparison of two {name: gradient or None} mappings (b against the reference a)."""
    a = {normalise_name(k): v for k, v in a.items()}
    b = {normalise_name(k): v for k, v in b.items()}
    records = []
    for name, ga in a.items():
        if name not in b:
            continue
        gb = b[name]
        if ga is not None and gb is not None and ga.shape != gb.shape:
            raise ValueError(f"parameter {name!r} has gradient shape {tuple(ga.shape)} in run_a and "
                             f"{tuple(gb.shape)} in run_b")
        numel = ga.numel() if ga is not None else (gb.numel() if gb is not None else 0)
        if ga is None or gb is None:
            records.append(_judge(name, numel, rtol, ga is None, gb is None, 0, 0, 0.0, 0.0, None))
            continue
        xa, bad_a = _finite_f64(ga)
        xb, bad_b = _finite_f64(gb.to(xa.device))
        d = xa - xb
        records.append(_judge(name, numel, rtol, False, False, bad_a, bad_b, float(xa @ xa), float(xb @ xb),
                              float(d @ d)))
    return CompareReport(records, rtol, "exact", [n for n in a if n not in b], [n for n in b if n not in a])


def compare_signatures(a: dict[str, _sig.Signature], b: dict[str, _sig.Signature], *,
                       rtol: float = TOLERANCES["fp32"]) -> CompareReport:
    """Estimated comparison of two {name: Signature} mappings (b against the reference a)."""
    a = {normalise_name(k): v for k, v in a.items()}
    b = {normalise_name(k): v for k, v in b.items()}
    records = []
    for name, sa in a.items():
        if name not in b:
            continue
        sb = b[name]
        if sa.none or sb.none:
            records.append(_judge(name, max(sa.numel, sb.numel), rtol, sa.none, sb.none, 0, 0, 0.0, 0.0, None))
            continue
        if sa.numel != sb.numel or len(sa.proj) != len(sb.proj):
            raise ValueError(f"parameter {name!r}: signatures of {sa.numel} and {sb.numel} elements cannot be compared")
        d2 = sum((x - y) ** 2 for x, y in zip(sa.proj, sb.proj))
        records.append(_judge(name, sa.numel, rtol, False, False, sa.nonfinite, sb.nonfinite, sa.sumsq, sb.sumsq, d2))
    return CompareReport(records, rtol, "signature", [n for n in a if n not in b], [n for n in b if n not in a])


class _RNG:
    """Every generator a forward/backward may draw from, captured and restored."""

    def __init__(self):
        import torch
        self.cpu = torch.get_rng_state()
        cuda_live = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.cuda = torch.cuda.get_rng_state_all() if cuda_live else None
        self.py = random.getstate()
        np = sys.modules.get("numpy")
        self.np = np.random.get_state() if np is not None else None

    def restore(self) -> None:
        import torch
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.py)
        if self.np is not None:
            import numpy as np
            np.random.set_state(self.np)


def _module_of(result, which: str) -> torch.nn.Module:
    import torch
    if not isinstance(result, torch.nn.Module):
        raise TypeError(f"compare(): {which} must return the module whose gradients to read (a torch.nn.Module), "
                        f"not {type(result).__name__}")
    return result


def compare(run_a: Callable[[], torch.nn.Module], run_b: Callable[[], torch.nn.Module], *,
            rtol: float | None = None, precision: str = "fp32", method: str = "exact") -> CompareReport:
    """Run both callables (one forward and backward each) from the same RNG state and compare the
    gradients of the modules they return, parameter by parameter (run_a is the reference).

    ``rtol``: the relative-error bound (default: ``TOLERANCES[precision]``; precision is run_b's:
    "fp32", "bf16" or "fp16"). ``method``: "exact" or "signature" (see the module's docstring).
    """
    import torch
    if isinstance(run_a, torch.nn.Module) or isinstance(run_b, torch.nn.Module):
        raise TypeError("compare(run_a, run_b) takes two zero-argument callables that run one forward and backward "
                        "and return the module, not the module itself")
    if not callable(run_a) or not callable(run_b):
        raise TypeError("compare(run_a, run_b): both must be zero-argument callables that run one forward and "
                        "backward and return the module")
    if method not in ("exact", "signature"):
        raise ValueError(f"method must be 'exact' or 'signature', not {method!r}")
    if rtol is None:
        if precision not in TOLERANCES:
            raise ValueError(f"precision must be one of {', '.join(TOLERANCES)}, not {precision!r}")
        rtol = TOLERANCES[precision]
    if not rtol > 0:
        raise ValueError(f"rtol must be positive, not {rtol!r}")
    state = _RNG()
    module_a = _module_of(run_a(), "run_a")
    pairs_a = named_trainable(module_a)
    grads_a: dict[str, torch.Tensor | None] = {}
    sigs_a: dict[str, _sig.Signature] = {}
    if method == "exact":
        grads_a = {n: (p.grad.detach().to("cpu", copy=True) if p.grad is not None else None) for n, p in pairs_a}
    else:
        sigs_a = _sig.signatures(pairs_a)
    for _, p in pairs_a:
        p.grad = None
    state.restore()
    module_b = _module_of(run_b(), "run_b")
    pairs_b = named_trainable(module_b)
    if method == "exact":
        return compare_gradients(grads_a, {n: p.grad for n, p in pairs_b}, rtol=rtol)
    return compare_signatures(sigs_a, _sig.signatures(pairs_b), rtol=rtol)
