"""Results as a terminal table, JSON, Markdown and JUnit XML."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

PASSING = {"reproduced", "not-reproduced"}


def agrees(result: dict) -> bool:
    """Whether a status is what the case's declared affected versions predict (skipped always is)."""
    status = result.get("status")
    if status == "skipped":
        return True
    return status in PASSING and status == result.get("expected")


def fix_marks(result: dict) -> str:
    marks = []
    for f in result.get("fixes", []):
        if f["works"] is None:
            marks.append(f"{f['name']}:{'error' if f.get('error') else 'n/a'}")
            continue
        m = "works" if f["works"] else "no"
        if f["agrees"] is False:
            m += "(!)"
        marks.append(f"{f['name']}:{m}")
    return " ".join(marks)


def table(results: list[dict]) -> str:
    head = ("case", "status", "expected", "ok", "time", "fixes")
    rows = [(r["id"], r.get("status", "?"), r.get("expected") or "-", "yes" if agrees(r) else "NO",
             f"{r.get('duration_s', 0):.1f}s", fix_marks(r)) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    widths[-1] = len(head[-1])
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    for r in results:
        if r.get("reason"):
            lines.append(f"  {r['id']}: {r.get('reason', '')}")
    return "\n".join(lines)


def document(results: list[dict], meta: dict) -> dict:
    return {**meta, "summary": summary(results), "results": results}


def summary(results: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    return {"cases": len(results), "statuses": counts, "disagreements": [r["id"] for r in results if not agrees(r)]}


def markdown(results: list[dict], meta: dict) -> str:
    env = meta.get("environment") or (results[0].get("environment") if results else {}) or {}
    versions = ", ".join(f"{k} {env.get(k)}" for k in ("python", "torch", "transformers", "peft", "trl") if env.get(k))
    lines = [f"# benchsuite run ({meta.get('label', 'current environment')})", "",
             f"Environment: {versions}; device {env.get('device', '?')}.", "",
             "| case | status | expected | agrees | fixes | time |", "|---|---|---|---|---|---|"]
    for r in results:
        fixes = "<br>".join(
            f"{f['title']}: {'error (see notes)' if f.get('error') else 'not applicable here' if f['works'] is None else 'works' if f['works'] else 'does not work'}"
            + (" (declared otherwise)" if f["agrees"] is False else "") for f in r.get("fixes", []))
        lines.append(f"| `{r['id']}` | {r.get('status')} | {r.get('expected') or '-'} | "
                     f"{'yes' if agrees(r) else '**no**'} | {fixes or '-'} | {r.get('duration_s', 0):.1f} s |")
    notes = [r for r in results if r.get("reason")]
    if notes:
        lines += ["", "Notes:", ""] + [f"- `{r['id']}`: {r['reason']}" for r in notes]
    return "\n".join(lines) + "\n"


def junit(results: list[dict], meta: dict) -> str:
    failures = sum(1 for r in results if not agrees(r) and r.get("status") not in ("error", "crashed", "timeout"))
    errors = sum(1 for r in results if r.get("status") in ("error", "crashed", "timeout"))
    skipped = sum(1 for r in results if r.get("status") == "skipped")
    total = sum(r.get("duration_s", 0) for r in results)
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<testsuites><testsuite name={quoteattr("benchsuite " + meta.get("label", "run"))} '
           f'tests="{len(results)}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{total:.3f}">']
    for r in results:
        out.append(f'  <testcase classname="benchsuite.cases" name={quoteattr(r["id"])} '
                   f'time="{r.get("duration_s", 0):.3f}">')
        status, msg = r.get("status"), r.get("reason") or ""
        detail = escape(json.dumps({k: r.get(k) for k in ("evidence", "fixes", "detail", "log_tail") if r.get(k)},
                                   indent=1, default=str)[:20000])
        if status == "skipped":
            out.append(f"    <skipped message={quoteattr(msg)}/>")
        elif status in ("error", "crashed", "timeout"):
            out.append(f'    <error type="{status}" message={quoteattr(msg)}>{detail}</error>')
        elif not agrees(r):
            m = f"status {status}, expected {r.get('expected')}" + (f": {msg}" if msg else "")
            out.append(f'    <failure type="{status}" message={quoteattr(m)}>{detail}</failure>')
        out.append(f"    <system-out>{escape('status: ' + str(status))}</system-out>")
        out.append("  </testcase>")
    out.append("</testsuite></testsuites>")
    return "\n".join(out) + "\n"


def write_atomic(path: str | os.PathLike, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)


def write_all(results: list[dict], meta: dict, json_path=None, junit_path=None, markdown_path=None) -> None:
    """Rewrites every requested file; called after each finished case so an interrupted run keeps them."""
    meta = {**meta, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if json_path:
        write_atomic(json_path, json.dumps(document(results, meta), indent=2, default=str))
    if junit_path:
        write_atomic(junit_path, junit(results, meta))
    if markdown_path:
        write_atomic(markdown_path, markdown(results, meta))
