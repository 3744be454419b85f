"""A JSON reader as strict as jq or JavaScript: NaN and Infinity are errors (issue 28: every JSON the project
writes parses strictly)."""
from __future__ import annotations

import json


def _reject(constant: str):
    raise ValueError(f"not strict JSON: bare {constant}")


def strict_loads(text: str):
    return json.loads(text, parse_constant=_reject)
