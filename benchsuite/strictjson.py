"""JSON that every strict parser reads: the reports benchsuite writes (run, matrix, bisect, doctor, bench, ...).

Python's ``json`` writes NaN and infinities as bare ``NaN``/``Infinity``, which JSON does not have (``jq``,
JavaScript's ``JSON.parse`` and most other languages reject the file). Here each such number is written as
``null`` and the document gains ``"nonfinite": {"<path>": "NaN" | "Infinity" | "-Infinity"}`` naming where
they were (``results[0].evidence.trigger.losses[2]``), so nothing is lost. Ground floor: imports nothing of
benchsuite. Internal messages between benchsuite's own processes keep Python's JSON (and their NaNs).
"""
from __future__ import annotations

import json
import math
from typing import Any


def _clean(obj: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        found[path or "$"] = "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
        return None
    if isinstance(obj, dict):
        return {k: _clean(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def dumps(doc: Any, indent: int | None = 2, default=str) -> str:
    """``json.dumps`` with non-finite numbers as null, their places listed under ``nonfinite`` (a dict
    document) and ``allow_nan=False`` as the guarantee."""
    found: dict[str, str] = {}
    # objects json cannot write (paths, versions) become text first, so their floats are seen too
    plain = json.loads(json.dumps(doc, default=default))
    clean = _clean(plain, "", found)
    if found and isinstance(clean, dict):
        clean["nonfinite"] = found
    return json.dumps(clean, indent=indent, allow_nan=False)
