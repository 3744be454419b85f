"""Reading what a user has after a run went wrong into signs (see ``signs``): a ``trainer_state.json`` (or the
checkpoint folder holding one), a Trainer or TRL console log (the printed ``{'loss': ..., 'grad_norm': ...}``
lines, and any traceback or warning in it), or a ``benchsuite watch --json`` report."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from . import signs as signs_mod

# A printed log dict: one level of braces, with a key a Trainer logs.
_DICT = re.compile(r"\{[^{}]*['\"](?:loss|eval_[A-Za-z_]+|grad_norm|learning_rate|train_runtime)['\"][^{}]*\}")
_BARE = re.compile(r"(?<![\w'\".])(-?)(nan|NaN|inf|Infinity)(?![\w'\"])")
# watch finding kinds -> the sign a log would show for them
_FINDING_SIGNS = {"non-finite": "grad-norm-nonfinite", "zero-everywhere": "grad-norm-zero",
                  "all-zero": "grad-norm-zero", "lr-zero": "lr-zero"}


class LogError(ValueError):
    """The file is not a log doctor can read; the message says what it expected."""


def read(path: str | Path) -> dict:
    """{"kind", "path", "records", "signs": {sign: evidence}, "text", "findings"} for the log at ``path``.
    ``kind`` is "trainer_state", "watch" or "console"; ``text`` is what error matching may read (a console
    log's own text); ``findings`` are a watch report's open findings."""
    p = Path(path).expanduser()
    if p.is_dir():
        candidates = sorted(p.glob("trainer_state.json")) or sorted(p.glob("*/trainer_state.json"))
        if not candidates:
            raise LogError(f"{p} is a folder without a trainer_state.json (give the file, a checkpoint folder, "
                           f"a console log or a watch --json report)")
        p = candidates[-1]
    try:
        raw = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LogError(f"cannot read {p}: {exc.strerror or exc}") from None
    doc = _json(raw)
    if isinstance(doc, dict) and isinstance(doc.get("log_history"), list):
        records = [r for r in doc["log_history"] if isinstance(r, dict)]
        return _result("trainer_state", p, records, "", [])
    if isinstance(doc, dict) and isinstance(doc.get("processes"), list):
        return _watch(p, doc)
    records = console_records(raw)
    if not records and not re.search(r"Error|Exception|Warning|WARNING", raw):
        raise LogError(f"{p}: no Trainer log line ({{'loss': ...}}), trainer_state.json, watch report, traceback "
                       f"or warning found in it")
    return _result("console", p, records, raw, [])


def _json(raw: str):
    try:
        return json.loads(raw)  # Python's json reads NaN and Infinity, as the Trainer writes them
    except ValueError:
        return None


def console_records(text: str) -> list[dict]:
    """The log dicts a Trainer/TRL run printed, in order (values as floats where they are numbers)."""
    out = []
    for m in _DICT.finditer(text):
        src = _BARE.sub(lambda g: f"'{g.group(1)}{g.group(2)}'", m.group(0))
        try:
            rec = ast.literal_eval(src)
        except (ValueError, SyntaxError):
            continue
        if isinstance(rec, dict):
            out.append({str(k): _num(v) for k, v in rec.items()})
    return out


def _num(v):
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _watch(p: Path, doc: dict) -> dict:
    findings, records = [], []
    for proc in doc["processes"]:
        if not isinstance(proc, dict):
            continue
        findings += [f for f in proc.get("findings") or [] if isinstance(f, dict) and f.get("status") == "open"]
        records += [{"loss": v} for v in proc.get("losses") or [] if signs_mod._number(v)]
    res = _result("watch", p, records, "", findings)
    for f in findings:
        sign = _FINDING_SIGNS.get(str(f.get("kind")))
        if sign and sign not in res["signs"]:
            res["signs"][sign] = f"watch: {f.get('title') or f.get('kind')}"
    return res


def _result(kind: str, p: Path, records: list[dict], text: str, findings: list[dict]) -> dict:
    found = signs_mod.from_records(records)
    for sign, pattern in signs_mod.TEXT_SIGNS:
        m = re.search(pattern, text)
        if m and sign not in found:
            found[sign] = f"the log says: {m.group(0)[:120]}"
    return {"kind": kind, "path": str(p), "records": len(records), "signs": found, "text": text,
            "findings": findings}
