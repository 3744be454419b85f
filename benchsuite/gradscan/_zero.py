"""Which exactly-zero gradients are zero by construction, decided from the parameters' state.

An adapter whose weight update is a product of factors (LoRA's ``B @ A``, on Linear, Embedding and Conv
layers, with or without DoRA; LoHa, LoKr, AdaLoRA, VeRA) has an exactly zero gradient in every factor
whose partner factor is still all zero: PEFT starts ``lora_B`` at zero for Linear/Conv layers but
``lora_embedding_A`` for embeddings, so which factor it is depends on the layer, not on the name.

The rule used here: a trainable parameter's all-zero gradient is explained when another trainable
factor of the same adapter layer (same PEFT layer, same adapter name) is all zero while the parameter
itself is not. Two factors that are both zero explain nothing: such a pair can never train, and is
reported. Outside PEFT, a module of a user's own (not a ``torch.nn`` layer) whose direct trainable
parameters include two or more matrices is treated the same way (a hand-written LoRA layer).
A bias whose gradient is exactly zero while its own layer's weight gets a non-zero gradient is explained
too: the loss is invariant to a shift of that layer's output, as the pairwise reward-model loss
``-logsigmoid(r_chosen - r_rejected)`` is for the score head's bias (the bias cancels in the
difference). Factor groups come from the module structure; a list of (name, tensor) pairs without a module falls
back to the names PEFT gives (``lora_A``/``lora_B``, ``lora_embedding_A``/``lora_embedding_B``).
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

    Named = list[tuple[str, torch.Tensor]]

_PAIR = re.compile(r"(lora_(?:embedding_)?)([AB])(?=[._]|$)")


def _peft_layer_type():
    mod = sys.modules.get("peft.tuners.tuners_utils")
    return getattr(mod, "BaseTunerLayer", None) if mod is not None else None


def factor_groups(module: torch.nn.Module) -> list[Named]:
    """Groups of trainable parameters that multiply each other, found from ``module``'s structure."""
    tuner = _peft_layer_type()
    groups: list[Named] = []
    for prefix, m in module.named_modules():
        if tuner is not None and isinstance(m, tuner):
            by_adapter: dict[str, Named] = {}
            for pname, p in m.named_parameters():
                parts = pname.split(".")
                if parts[0] == "base_layer" or len(parts) < 2 or not p.requires_grad:
                    continue
                # PEFT keeps each factor in a dict keyed by adapter name: lora_A.<adapter>.weight,
                # lora_embedding_A.<adapter>, hada_w1_a.<adapter>, ...
                full = f"{prefix}.{pname}" if prefix else pname
                by_adapter.setdefault(parts[1], []).append((full, p))
            groups.extend(g for g in by_adapter.values() if len(g) >= 2)
        elif not type(m).__module__.startswith("torch."):
            direct = [(f"{prefix}.{n}" if prefix else n, p) for n, p in m.named_parameters(recurse=False)
                      if p.requires_grad and p.dim() >= 2]
            if len(direct) >= 2:
                groups.append(direct)
    return groups


def name_groups(pairs: Iterable[tuple[str, torch.Tensor]]) -> list[Named]:
    """Factor groups from PEFT's parameter names, for callers that pass (name, tensor) pairs only."""
    by_key: dict[str, Named] = {}
    for name, t in pairs:
        if _PAIR.search(name):
            by_key.setdefault(_PAIR.sub(lambda m: m.group(1) + "*", name), []).append((name, t))
    return [g for g in by_key.values() if len(g) >= 2]


def explained_zero(zero_grad: set[str], groups: list[Named],
                   all_zero: Callable[[list[torch.Tensor]], list[bool]] | None = None) -> set[str]:
    """Names in ``zero_grad`` (parameters whose gradient is exactly zero) that a zero partner explains.

    ``all_zero`` maps a list of tensors to whether each is entirely zero; the default asks torch, one
    tensor at a time. Only groups holding a zero-gradient parameter are looked at.
    """
    todo = [g for g in groups if any(n in zero_grad for n, _ in g)]
    if not todo:
        return set()
    tensors = [p.detach() for g in todo for _, p in g]
    flags = all_zero(tensors) if all_zero is not None else [not bool(t.count_nonzero()) for t in tensors]
    out: set[str] = set()
    i = 0
    for g in todo:
        zero = {n for (n, _), f in zip(g, flags[i:i + len(g)]) if f}
        i += len(g)
        for n, _ in g:
            if n in zero_grad and n not in zero and zero:
                out.add(n)
    return out


def bias_weight_pairs(module: torch.nn.Module) -> dict[str, str]:
    """{bias name: weight name} for every layer of ``module`` that has both as parameters."""
    import torch
    out: dict[str, str] = {}
    for prefix, m in module.named_modules():
        bias, weight = getattr(m, "bias", None), getattr(m, "weight", None)
        if isinstance(bias, torch.nn.Parameter) and isinstance(weight, torch.nn.Parameter):
            out[f"{prefix}.bias" if prefix else "bias"] = f"{prefix}.weight" if prefix else "weight"
    return out


def shift_invariant_biases(zero_grad: set[str], module: torch.nn.Module | dict[str, str],
                           with_signal: set[str]) -> set[str]:
    """Biases in ``zero_grad`` whose own layer's weight is in ``with_signal`` (a non-zero gradient).
    ``module``: the model, or its ``bias_weight_pairs`` computed once."""
    pairs = module if isinstance(module, dict) else bias_weight_pairs(module)
    return {b for b in zero_grad if b in pairs and pairs[b] in with_signal}
