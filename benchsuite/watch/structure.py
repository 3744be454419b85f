"""What watch learns about a model's structure: which module owns an optimizer's tensors (outside a Trainer),
its trainable parameters, adapters loaded frozen, and whether the ranks' replicas hold the same weights."""
from __future__ import annotations

import sys

from ..gradscan import verdicts as V


def index_roots() -> list:
    """Every module that is no other module's child, most parameters first."""
    import gc
    import warnings

    import torch
    with warnings.catch_warnings():  # isinstance on some lazy objects warns about deprecations
        warnings.simplefilter("ignore")
        modules = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
    children = {id(c) for m in modules for c in m.children()}
    roots = [m for m in modules if id(m) not in children]
    roots.sort(key=lambda m: -sum(1 for _ in m.parameters()))
    return roots


def root_of(params, names: dict[int, str]):
    """The module holding most of ``params`` (and names its parameters into ``names``), or None."""
    ids = {id(p) for p in params}
    best, hits = None, 0
    for r in index_roots():
        n = sum(1 for p in r.parameters() if id(p) in ids)
        if n > hits:
            best, hits = r, n
    if best is not None:
        for n, p in best.named_parameters():
            names[id(p)] = n
    return best


def model_trainable(m, root, group_params, scans: int) -> list:
    """The model's trainable (name, parameter) pairs. Its parameter list is read once (refreshed when the
    optimizer holds a tensor it does not know, and every 100 scans); requires_grad every scan."""
    cached = m.params_cache
    if cached is None or cached[0]() is not root or scans - cached[2] >= 100 or \
            any(id(p) not in cached[3] for p in group_params):
        import weakref
        pairs = list(root.named_parameters())
        cached = m.params_cache = (weakref.ref(root), pairs, scans, {id(p) for _, p in pairs}, None)
    return [(n, p) for n, p in cached[1] if p.requires_grad]


def bias_pairs(m, root) -> dict:
    from benchsuite.gradscan._zero import bias_weight_pairs
    cached = m.params_cache
    if cached is None:
        return bias_weight_pairs(root)
    if cached[4] is None:
        cached = m.params_cache = cached[:4] + (bias_weight_pairs(root),)
    return cached[4]


def factor_groups(m, root, n: int):
    from benchsuite.gradscan._zero import factor_groups as build
    key, groups = m.groups
    if key != (id(root), n):
        groups = build(root)
        m.groups = ((id(root), n), groups)
    return groups


def frozen_adapter(root) -> list[str]:
    """Adapter weights (parameters of PEFT layers other than the wrapped base layer), none trainable."""
    mod = sys.modules.get("peft.tuners.tuners_utils")
    tuner = getattr(mod, "BaseTunerLayer", None)
    if tuner is None:
        return []
    names = []
    for prefix, m in root.named_modules():
        if isinstance(m, tuner):
            for n, p in m.named_parameters():
                if not n.startswith("base_layer."):
                    if p.requires_grad:
                        return []
                    names.append(f"{prefix}.{n}" if prefix else n)
    return names


class Replicas:
    """Under torch.distributed, cheap exact fingerprints of every trainable parameter compared across ranks at
    the 2nd and every K-th scan, through a gloo group of their own."""

    def __init__(self, world: int, every: int):
        self.world, self.every = world, every
        self.group: object = None   # None: not set up yet; False: stopped; else the gloo group

    def check(self, tracker, named, step, notes: list) -> None:
        if self.world <= 1 or self.group is False:
            return
        if not (tracker.scans == 2 or (tracker.scans > 2 and tracker.scans % self.every == 0)):
            return
        import torch
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
            return
        if self.group is None:
            if any(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") or type(p).__name__ == "FlatParameter"
                   for _, p in named):
                self.group = False  # sharded (FSDP, DeepSpeed, tensor parallel): ranks hold different shards
                return
            self.group = dist.new_group(backend="gloo")
        import datetime
        import zlib
        sums = V.checksums(named)  # exact: replicas under DDP hold bit-identical weights
        shape = zlib.crc32(";".join(f"{n}:{tuple(p.shape)}" for n, p in named).encode())
        x = torch.tensor([shape] + [sums[n][0] for n, _ in named], dtype=torch.int64)
        x = torch.cat([x, ~x])  # one MAX reduction gives the maximum and (through ~) the minimum
        work = dist.all_reduce(x, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        try:
            work.wait(timeout=datetime.timedelta(seconds=120))
        except Exception as exc:
            self.group = False
            notes.append(f"replica check stopped: {exc}")
            return
        k = len(named) + 1
        hi, lo = x[:k], ~x[k:]
        if hi[0] != lo[0]:
            self.group = False  # different models per rank (pipeline stages...): not replicas
            return
        differ = [n for (n, _), h, low in zip(named, hi[1:].tolist(), lo[1:].tolist()) if h != low]
        if differ:
            tracker.note(V.REPLICAS, differ, step)
