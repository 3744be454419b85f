"""The configurations of a bench grid: its keys and defaults, --grid parsed, the grid expanded with each
configuration's gradient baseline, and the label a configuration goes by in tables and plots."""
from __future__ import annotations

import itertools

from ..harness.report import UsageError

KEYS = ("checkpointing", "accumulation", "precision", "adapter")
DEFAULT_GRID: dict[str, list] = {"checkpointing": ["off", "reentrant", "non-reentrant"], "accumulation": [1, 4],
                "precision": ["fp32", "fp16", "bf16"], "adapter": ["full", "lora"]}
# On a CPU, fp16 has no fast kernels (a step is 20-30x slower than fp32 or bf16): it is measured when
# asked for (--grid precision=fp16), not by default.
CPU_DEFAULT_PRECISION = ["fp32", "bf16"]
CHOICES = {"checkpointing": ("off", "reentrant", "non-reentrant"), "precision": ("fp32", "fp16", "bf16"),
           "adapter": ("full", "lora")}


def parse_grid(items: list[str], device: str = "cuda", batch: int | None = None) -> dict:
    """The grid from --grid KEY=V1,V2 items over the defaults; UsageError for anything it cannot run."""
    grid = {k: list(v) for k, v in DEFAULT_GRID.items()}
    if not str(device).startswith("cuda"):
        grid["precision"] = list(CPU_DEFAULT_PRECISION)
    for item in items:
        if "=" not in item:
            raise UsageError(f"--grid takes KEY=V1,V2, not {item!r}; keys: {', '.join(KEYS)}")
        key, values = (x.strip() for x in item.split("=", 1))
        if key not in KEYS:
            raise UsageError(f"--grid {item}: unknown key {key!r}; keys: {', '.join(KEYS)}")
        vals = list(dict.fromkeys(v.strip() for v in values.split(",") if v.strip()))
        if not vals:
            raise UsageError(f"--grid {item}: no value given")
        if key == "accumulation":
            bad = [v for v in vals if not v.isdigit() or int(v) < 1]
            if bad:
                raise UsageError(f"--grid {item}: accumulation takes whole numbers of at least 1, not {bad[0]!r}")
            steps = [int(v) for v in vals]
            odd = [v for v in steps if batch is not None and batch % v]
            if odd:
                raise UsageError(f"--grid {item}: --batch {batch} cannot be split into {odd[0]} equal micro-batches")
            grid[key] = steps
            continue
        else:
            bad = [v for v in vals if v not in CHOICES[key]]
            if bad:
                raise UsageError(f"--grid {item}: unknown {key} {bad[0]!r}; choose from {', '.join(CHOICES[key])}")
        grid[key] = vals
    return grid


def expand(grid: dict) -> list[dict]:
    return [dict(zip(KEYS, combo)) for combo in itertools.product(*(grid[k] for k in KEYS))]


def gradient_baseline(c: dict) -> dict:
    """The configuration whose gradients c's are compared with: same model and adapter, checkpointing off,
    accumulation 1, fp32."""
    return {"checkpointing": "off", "accumulation": 1, "precision": "fp32", "adapter": c["adapter"]}


def with_baselines(configs: list[dict]) -> list[dict]:
    """The configurations with each one's gradient baseline added (first) where the grid lacks it."""
    have = {label(c) for c in configs}
    added = []
    for c in configs:
        b = gradient_baseline(c)
        if label(b) not in have:
            have.add(label(b))
            added.append({**b, "added_as": "gradient baseline"})
    return added + configs


def label(c: dict) -> str:
    names = {"off": "ckpt-off", "reentrant": "ckpt-re", "non-reentrant": "ckpt-nonre"}
    ck = names.get(c["checkpointing"], c["checkpointing"])
    return f"{ck}/acc{c['accumulation']}/{c['precision']}/{c['adapter']}"
