"""Results as a terminal table, JSON, Markdown and JUnit XML."""
from __future__ import annotations

import json
import time
from xml.sax.saxutils import escape, quoteattr

from .. import strictjson
from ..common import UsageError, check_output, envelope, version, write_atomic  # noqa: F401 (re-exported)

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
        if f.get("not_judged"):  # the trigger did not reproduce: nothing to fix, only training health checked
            m = "not-judged" if f["agrees"] is not False else "breaks-training(!)"
            marks.append(f"{f['name']}:{m}")
            continue
        m = "works" if f["works"] else "no"
        if f["agrees"] is False:
            m += "(!)"
        marks.append(f"{f['name']}:{m}")
    return " ".join(marks)


def _fix_word(f: dict) -> str:
    if f.get("error"):
        return "error (see notes)"
    if f["works"] is None:
        return "not applicable here"
    if f.get("not_judged"):
        return f"not judged: {f['not_judged']}" + ("" if f["works"] else " (and training was not healthy)")
    return "works" if f["works"] else "does not work"


def table(results: list[dict]) -> str:
    head = ("case", "status", "expected", "ok", "time", "fixes")
    rows = [(r["id"], r.get("status", "?"), "-" if r.get("status") == "skipped" else r.get("expected") or "-",
             "-" if r.get("status") == "skipped" else "yes" if agrees(r) else "NO",
             f"{r.get('duration_s', 0):.1f}s", fix_marks(r)) for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    widths[-1] = len(head[-1])
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    for r in results:
        if r.get("reason"):
            lines.append(f"  {r['id']}: {r.get('reason', '')}")
        elif r.get("status") == "not-reproduced" and r.get("expected") == "not-reproduced":
            lines.append(f"  {r['id']}: {why_not_here(r)}")
    return "\n".join(lines)


def why_not_here(r: dict) -> str:
    """One line for a case that did not reproduce where its declaration says it should not: the range, what
    is installed, the release that fixed it, and the way it can still be triggered where the case says so."""
    affected = r.get("affected") or {}
    env = r.get("environment") or {}
    here = ", ".join(f"{k} {env.get(k) or 'not installed'}" for k in affected) or "these versions"
    line = (f"not reproduced, as declared: affected {', '.join(f'{k}{v}' for k, v in affected.items())}; "
            f"here {here}")
    if r.get("fixed_in"):
        line += f"; fixed in {r['fixed_in']}"
    if r.get("still_triggers"):
        line += f"; still triggered here by: {r['still_triggers']}"
    return line


def document(results: list[dict], meta: dict) -> dict:
    return envelope("run", {**meta, "summary": summary(results), "results": results})


def summary(results: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    return {"cases": len(results), "statuses": counts, "disagreements": [r["id"] for r in results if not agrees(r)]}


def markdown(results: list[dict], meta: dict) -> str:
    env = meta.get("environment") or (results[0].get("environment") if results else {}) or {}
    versions = ", ".join(f"{k} {env.get(k)}" for k in ("python", "torch", "transformers", "peft", "trl") if env.get(k))
    if env.get("resolved_as_of"):
        versions += f" (unpinned companions as of {env['resolved_as_of']})"
    reps = meta.get("repeat", 1)
    lines = [f"# benchsuite run ({meta.get('label', 'current environment')})", "",
             f"Environment: {versions}; device {env.get('device', '?')}."
             + (f" Every case run {reps} times." if reps > 1 else ""), "",
             "| case | status | expected | agrees | fixes | time |", "|---|---|---|---|---|---|"]
    for r in results:
        fixes = "<br>".join(
            f"{f['title']}: {_fix_word(f)}" + (" (declared otherwise)" if f["agrees"] is False else "")
            for f in r.get("fixes", []))
        skipped = r.get("status") == "skipped"
        lines.append(f"| `{r['id']}` | {r.get('status')} | {'-' if skipped else r.get('expected') or '-'} | "
                     f"{'-' if skipped else 'yes' if agrees(r) else '**no**'} | {fixes or '-'} | "
                     f"{r.get('duration_s', 0):.1f} s |")
    notes = [r for r in results if r.get("reason")]
    if notes:
        lines += ["", "Notes:", ""] + [f"- `{r['id']}`: {r['reason']}" for r in notes]
    flaky = [r for r in results if r.get("status") == "flaky"]
    if flaky:
        lines += ["", "Runs of the flaky cases:", ""]
        for r in flaky:
            for x in r.get("runs", []):
                lines.append(f"- `{r['id']}` run {x['run']}: {x['status']}; fixes "
                             + (", ".join(f"{k}: {v}" for k, v in x["fixes"].items()) or "-")
                             + f"; {x.get('basis') or ''}")
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
        detail = escape(json.dumps({k: r.get(k) for k in ("runs", "evidence", "fixes", "noop_fix", "detail", "log_tail")
                                    if r.get(k)},
                                   indent=1, default=str)[:20000])
        if status == "skipped":
            out.append(f"    <skipped message={quoteattr(msg)}/>")
        elif status in ("error", "crashed", "timeout"):
            out.append(f'    <error type="{status}" message={quoteattr(msg)}>{detail}</error>')
        elif not agrees(r):
            m = f"status {status}, expected {r.get('expected')}" + (f": {msg}" if msg else "")
            out.append(f'    <failure type="{status}" message={quoteattr(m)}>{detail}</failure>')
        runs = "".join(f"\nrun {x.get('run')}: {x.get('status')} {x.get('fixes')}" for x in r.get("runs") or []
                       if r.get("repeat", 1) > 1)
        out.append(f"    <system-out>{escape('status: ' + str(status) + runs)}</system-out>")
        out.append("  </testcase>")
    out.append("</testsuite></testsuites>")
    return "\n".join(out) + "\n"


def write_all(results: list[dict], meta: dict, json_path=None, junit_path=None, markdown_path=None,
              final: bool = True) -> None:
    """Rewrites every requested file; called after each finished case (final=False) so an interrupted
    run keeps them. A report going to stdout ("-") is written once, at the end."""
    meta = {**meta, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for path, render in ((json_path, lambda: strictjson.dumps(document(results, meta), indent=2, default=str)),
                         (junit_path, lambda: junit(results, meta)),
                         (markdown_path, lambda: markdown(results, meta))):
        if path and (final or str(path) != "-"):
            write_atomic(path, render())
