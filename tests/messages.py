"""A check for what benchsuite prints (issue 32): no message with an empty field. A template rendered with a
missing value shows as `()`, `[]`, `''`, `None`, a colon or comma followed by nothing, or two separators in a
row; every line benchsuite wrote is checked, with the values of a real run."""
from __future__ import annotations

import re

EMPTY = [
    (re.compile(r"\(\s*\)"), "empty parentheses"),
    (re.compile(r"\[\s*\]"), "empty brackets"),
    (re.compile(r"''|\"\""), "empty quotes"),
    (re.compile(r"\bNone\b"), "None"),
    (re.compile(r"[,;]\s*$"), "nothing after a separator at the end of the line"),
    (re.compile(r"[:,;]\s*[,;)]"), "nothing between two separators"),
    (re.compile(r"\S {2,}[,;:.)]"), "a blank before a separator"),
    (re.compile(r"\bat\s*(?:of\b|\(|$)|\bin\s*(?:$|\()"), "a preposition with nothing after it"),
]


def empty_fields(text: str, prefix: str, block: str = "summary:") -> list[str]:
    """benchsuite's own lines of ``text`` (those starting with ``prefix``, and the indented lines of the block
    that follows a ``prefix`` line containing ``block``) that show a field rendered empty."""
    bad, in_block = [], False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            body, in_block = line[len(prefix):], block in line
        elif in_block and line.startswith(" "):
            body = line
        else:
            in_block = False
            continue
        bad += [f"{why}: {line}" for rx, why in EMPTY if rx.search(body)]
        after = lines[i + 1] if i + 1 < len(lines) else ""
        if body.rstrip().endswith(":") and _indent(after) <= _indent(line):
            bad.append(f"a colon with nothing after it: {line}")  # a colon may only open an indented block
    return bad


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))
