"""Ranking the catalogue against a symptom: a pasted error (``errors``) or the signs of a log (``signs``,
``logs``). Works on the rows ``doctor``'s probe returns (a case's metadata plus whether it applies to the
environment), so the same ranking serves the installed environment and a pinned one."""
from __future__ import annotations

import re

from . import errors

# How much seeing a sign says about a case that declares it: rare, specific signs weigh more.
SIGN_WEIGHT = {"loss-log2": 3.0, "no-eval-loss": 3.0, "lr-zero": 3.0, "steps-skipped": 3.0,
               "loss-nonfinite": 2.0, "grad-norm-nonfinite": 2.0, "loss-diverging": 2.0,
               "loss-zero": 1.5, "grad-norm-zero": 1.5, "loss-flat": 1.0}


def _match(row: dict, score: float, why: list[str]) -> dict:
    applies = row.get("category") == "applies"
    return {"id": row["id"], "title": row.get("title", ""), "family": row.get("family", ""), "score": score,
            "why": why, "applies": applies,
            "applies_reason": None if applies else (row.get("reason") or row.get("category")),
            "affected": row.get("affected") or {}, "references": row.get("references") or [],
            "fixed_in": row.get("fixed_in") or "",
            "fixes": [{"name": f["name"], "title": f["title"], "declared_works": f["declared_works"]}
                      for f in row.get("fixes") or []]}


def _sorted(found: list[tuple[float, int, dict]]) -> list[dict]:
    # best score first; among equals the cases that apply here, then the catalogue's order
    found.sort(key=lambda x: (-x[0], not x[2]["applies"], x[1]))
    return [m for _, _, m in found]


def by_error(text: str, rows: list[dict]) -> list[dict]:
    """The cases whose declared exception, message or warning explain the pasted ``text``, best first."""
    pasted = errors.parse(text)
    found = []
    for order, row in enumerate(rows):
        if row.get("category") == "broken":
            continue
        s, why = errors.score(pasted, row.get("symptom_match") or {}, row.get("title", ""))
        if s > 0:
            found.append((s, order, _match(row, s, why)))
    return _sorted(found)


def _finding_hits(row: dict, findings: list[dict]) -> list[str]:
    hits = []
    for ex in row.get("explains") or []:
        for f in findings:
            names = f.get("names") or []
            if ex.get("finding") == f.get("kind") and (not ex.get("params") or
                                                       any(re.search(ex["params"], n) for n in names)):
                hits.append(f"watch's finding '{f.get('title') or f.get('kind')}' is one this case explains")
                break
    return hits


def by_log(log: dict, rows: list[dict]) -> list[dict]:
    """The cases that declare the signs the log shows (and, for a watch report, explain its findings), best
    first. A console log's tracebacks and warnings count as a pasted error."""
    seen = log["signs"]
    found = []
    pasted = errors.parse(log["text"]) if log.get("text") else None
    for order, row in enumerate(rows):
        if row.get("category") == "broken":
            continue
        declared = row.get("signs") or []
        shared = [s for s in declared if s in seen]
        score = sum(SIGN_WEIGHT.get(s, 1.0) for s in shared)
        why = [f"the log shows {s} ({seen[s]}), which this case declares" for s in shared]
        if shared:
            score -= 0.25 * len([s for s in declared if s not in seen])  # what it would also show, and does not
        hits = _finding_hits(row, log.get("findings") or [])
        score += 3.0 * len(hits)
        why += hits
        if pasted is not None and (pasted["exceptions"] or pasted["warnings"]):
            s, w = errors.score(pasted, row.get("symptom_match") or {}, row.get("title", ""))
            score += s
            why += w
        if why and score > 0:
            found.append((round(score, 3), order, _match(row, round(score, 3), why)))
    return _sorted(found)
