"""Parameter names, grouped compactly for a console line.

``group(names)`` merges names that differ in one dotted component at a time into patterns such as
``base_model.model.model.layers.{0-13}.self_attn.{q_proj,v_proj}.{lora_A,lora_B}.default.weight``.
A pattern stands for exactly the names it was built from: two patterns are merged only where every
other component is the same, so a pattern never covers a name that was not in the list.
"""
from __future__ import annotations


def _ranges(values: set[str]) -> str:
    nums = sorted(int(v) for v in values)
    out, start, prev = [], nums[0], nums[0]
    for n in nums[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(out)


def _render(part: frozenset) -> str:
    if len(part) == 1:
        return next(iter(part))
    if all(v.isdigit() for v in part):
        return "{" + _ranges(set(part)) + "}"
    return "{" + ",".join(sorted(part)) + "}"


def group(names: list[str]) -> list[tuple[str, int]]:
    """[(pattern, number of names it stands for)], largest first."""
    by_len: dict[int, dict[tuple, int]] = {}
    for n in dict.fromkeys(names):
        parts = tuple(frozenset([p]) for p in n.split("."))
        by_len.setdefault(len(parts), {})[parts] = 1
    out: list[tuple[str, int]] = []
    for length, patterns in by_len.items():
        changed = True
        while changed:
            changed = False
            for i in range(length):
                merged: dict[tuple, tuple[set, int]] = {}
                for pat, count in patterns.items():
                    key = pat[:i] + pat[i + 1:]
                    values, total = merged.get(key, (set(), 0))
                    merged[key] = (values | pat[i], total + count)
                if len(merged) < len(patterns):
                    changed = True
                    patterns = {k[:i] + (frozenset(v),) + k[i:]: c for k, (v, c) in merged.items()}
        out.extend((".".join(_render(p) for p in pat), count) for pat, count in patterns.items())
    return sorted(out, key=lambda x: -x[1])


def compact(names: list[str], limit: int = 3) -> str:
    """A one-line description of ``names``: at most ``limit`` patterns, then how many more."""
    groups = group(names)
    shown = "; ".join(p if c == 1 else f"{p} ({c})" for p, c in groups[:limit])
    rest = sum(c for _, c in groups[limit:])
    return shown + (f"; and {rest} more" if rest else "")
