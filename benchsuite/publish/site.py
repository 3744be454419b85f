"""`benchsuite site DIR`: the catalogue as a static site (plain HTML and CSS, a few lines of script for the
filters; no server: it opens from the file system).

``index.html``: every case x release cell of the given matrix results, coloured by status, with filters by
family, tag and package (without script every row simply shows). ``cases/<id>.html``: the trigger's code,
the symptom, the evidence of the case's last run (exception, losses, gradient findings), each fix's verdict
per release, the references and the command that reproduces it.
"""
from __future__ import annotations

import html
import inspect
import json
import re
from pathlib import Path

from ..harness.report import write_atomic
from .osv import reference

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}td.c{text-align:center;font-size:.85em;white-space:nowrap}
.reproduced{background:#f4b6b6}.not-reproduced{background:#bfe3bf}.skipped{background:#eee;color:#777}
.fix-failed,.error,.crashed,.timeout,.flaky{background:#f7d98b}.disagrees{outline:2px solid #c00;outline-offset:-3px}
.none{color:#bbb}code,pre{background:#f6f6f6}pre{padding:.6em;overflow:auto;max-width:100em}
.filters label{margin-right:1em}.tag{display:inline-block;background:#eef;border-radius:3px;padding:0 .3em;margin:1px}
tr.case td:first-child{white-space:nowrap}th.col{font-size:.8em;line-height:1.2}
.legend span{display:inline-block;padding:0 .5em;margin-right:.4em;border:1px solid #ccc}
"""

FILTER_JS = """
function applyFilters(){
  var fam=document.getElementById('family').value, tag=document.getElementById('tag').value,
      pkg=document.getElementById('package').value;
  document.querySelectorAll('tr.case').forEach(function(r){
    var ok=(!fam||r.dataset.family===fam)&&(!tag||(' '+r.dataset.tags+' ').indexOf(' '+tag+' ')>=0);
    r.style.display=ok?'':'none';});
  document.querySelectorAll('[data-package]').forEach(function(c){
    c.style.display=(!pkg||c.dataset.package===pkg)?'':'none';});
  document.getElementById('shown').textContent=
    document.querySelectorAll('tr.case:not([style*="none"])').length;
}
"""

SHORT = {"reproduced": "REPRO", "not-reproduced": "no", "skipped": "skip", "fix-failed": "FIX-FAILED",
         "error": "error", "crashed": "crashed", "timeout": "timeout", "flaky": "flaky"}


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def load_matrices(paths: list[Path]) -> tuple[list[str], dict[tuple[str, str], dict]]:
    """(column labels in order, {(case id, label): cell}) from matrix result files."""
    columns: list[str] = []
    cells: dict[tuple[str, str], dict] = {}
    for path in paths:
        for cell in json.loads(Path(path).read_text()).get("cells") or []:
            label = cell.get("env") or "current"
            if label not in columns:
                columns.append(label)
            cells[(cell["case"], label)] = cell
    return columns, cells


def _package(label: str) -> str:
    return re.split(r"[=<>!~ ]", label, maxsplit=1)[0]


def _page(title: str, body: str, depth: int = 0) -> str:
    up = "../" * depth
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<link rel=stylesheet href='{up}style.css'></head><body>{body}</body></html>\n")


def _cell_html(cell: dict | None, package: str) -> str:
    if cell is None:
        return f"<td class='c none' data-package='{_e(package)}'>-</td>"
    status = cell.get("status", "?")
    cls = status + ("" if cell.get("agrees", True) else " disagrees")
    tip = cell.get("reason") or cell.get("expected") or ""
    return (f"<td class='c {_e(cls)}' data-package='{_e(package)}' title='{_e(tip)}'>"
            f"{_e(SHORT.get(status, status))}{'' if cell.get('agrees', True) else ' !'}</td>")


def index(cases: list, columns: list[str], cells: dict, generated: str) -> str:
    families = sorted({c.family for c in cases if c.family})
    tags = sorted({t for c in cases for t in c.tags})
    packages = list(dict.fromkeys(_package(col) for col in columns))

    def options(name, values):
        return (f"<label>{name} <select id={name} onchange=applyFilters()><option value=''>all</option>"
                + "".join(f"<option>{_e(v)}</option>" for v in values) + "</select></label>")

    head = "".join(f"<th class=col data-package='{_e(_package(col))}'>{_e(_package(col))}<br>"
                   f"{_e(col[len(_package(col)):].lstrip('='))}</th>" for col in columns)
    rows = []
    for c in cases:
        affected = ", ".join(f"{k}{v}" for k, v in c.affected.items()) or "every version"
        row = "".join(_cell_html(cells.get((c.id, col)), _package(col)) for col in columns)
        rows.append(f"<tr class=case data-family='{_e(c.family)}' data-tags='{_e(' '.join(c.tags))}'>"
                    f"<td><a href='cases/{_e(c.id)}.html'>{_e(c.id)}</a></td><td>{_e(c.family or '-')}</td>"
                    f"<td>{_e(affected)}</td>{row}</tr>")
    legend = "".join(f"<span class='{k}'>{v}</span>" for k, v in
                     (("reproduced", "REPRO: the failure reproduced"), ("not-reproduced", "no: it did not"),
                      ("skipped", "skip: needs what this machine lacks"), ("fix-failed", "other: see the case"),
                      ("disagrees", "! differs from the declared range")))
    body = (f"<h1>benchsuite catalogue: {len(cases)} reproducible training failures</h1>"
            f"<p>Each row is a case (a reported failure reproduced with the real libraries on a tiny model); each "
            f"column a release it was run on. Generated {_e(generated)}.</p><p class=legend>{legend}</p>"
            f"<p class=filters>{options('family', families)}{options('tag', tags)}{options('package', packages)}"
            f" <span id=shown>{len(cases)}</span> shown</p>"
            f"<table id=grid><thead><tr><th>case</th><th>family</th><th>declared affected</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><script>{FILTER_JS}</script>")
    return _page("benchsuite catalogue", body)


def _evidence(result: dict | None) -> str:
    if not result:
        return "<p>No run result was given (<code>benchsuite site DIR --run RUN.json</code>).</p>"
    trig = (result.get("evidence") or {}).get("trigger") or {}
    parts = [f"<p>Status <b>{_e(result.get('status'))}</b> (expected {_e(result.get('expected'))}) in "
             f"{_e(result.get('duration_s'))} s. {_e(result.get('basis') or result.get('reason') or '')}</p>"]
    if trig.get("exception"):
        exc = trig["exception"]
        parts.append(f"<p>Exception: <code>{_e(exc.get('type'))}: {_e(exc.get('message'))}</code></p>")
    if trig.get("losses"):
        parts.append(f"<p>Losses: <code>{_e(', '.join(str(x) for x in trig['losses'][:12]))}</code></p>")
    for key, what in (("no_grad", "never got a gradient"), ("unchanged", "never changed")):
        if trig.get(key):
            parts.append(f"<p>Parameters that {what}: <code>{_e(', '.join(trig[key][:8]))}</code></p>")
    if trig.get("warnings"):
        parts.append("<p>Warnings:</p><pre>" + _e("\n".join(trig["warnings"][:5])) + "</pre>")
    return "".join(parts)


def case_page(case, columns: list[str], cells: dict, result: dict | None) -> str:
    try:
        code = inspect.getsource(case.trigger_fn) if case.trigger_fn else ""
    except (OSError, TypeError):
        code = ""
    refs = "".join(f"<li><a href='{_e(reference(r)['url'])}'>{_e(r)}</a></li>" for r in case.references)
    head = "".join(f"<th>{_e(col)}</th>" for col in columns)
    fixes = []
    for f in case.fixes:
        verdicts = "".join(
            f"<td class=c>{_e(_fix_verdict(cells.get((case.id, col)), f.name))}</td>" for col in columns)
        fixes.append(f"<tr><td>{_e(f.title)}</td><td>{'works' if f.works else 'does not work'}"
                     f"{(': ' + _e(f.note)) if f.note else ''}</td>{verdicts}</tr>")
    affected = ", ".join(f"{k}{v}" for k, v in case.affected.items()) or "every version"
    body = (f"<p><a href='../index.html'>catalogue</a></p><h1>{_e(case.id)}</h1><p>{_e(case.title)}</p>"
            f"<p>Family: {_e(case.family or '-')}; tags: "
            + "".join(f"<span class=tag>{_e(t)}</span>" for t in case.tags)
            + f"</p><p>Declared affected: <b>{_e(affected)}</b>"
            + (f"; fixed in {_e(case.fixed_in)}" if case.fixed_in else "") + "</p>"
            f"<h2>Symptom</h2><p>{_e(case.symptom.description)}</p>"
            f"<h2>Reproduce</h2><pre>benchsuite run {_e(case.id)}</pre>"
            f"<h2>Trigger</h2><pre>{_e(code)}</pre><h2>Last run</h2>{_evidence(result)}"
            f"<h2>Fixes, per release</h2><table><thead><tr><th>fix</th><th>declared</th>{head}</tr></thead>"
            f"<tbody>{''.join(fixes)}</tbody></table>"
            + (f"<h2>Notes</h2><p>{_e(case.notes)}</p>" if case.notes else "")
            + f"<h2>References</h2><ul>{refs}</ul>")
    return _page(case.id, body, depth=1)


def _fix_verdict(cell: dict | None, name: str) -> str:
    if cell is None or name not in (cell.get("fixes") or {}):
        return "-"
    works = cell["fixes"][name]
    if cell.get("status") != "reproduced":
        return "not judged"
    return "n/a" if works is None else "works" if works else "no"


def write(folder: Path, cases: list, matrices: list[Path], run: Path | None, generated: str) -> int:
    """Write the site into ``folder``; returns the number of case pages."""
    columns, cells = load_matrices(matrices)
    results = {}
    if run is not None:
        results = {r["id"]: r for r in json.loads(Path(run).read_text()).get("results") or []}
    (folder / "cases").mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "style.css", CSS.lstrip())
    write_atomic(folder / "index.html", index(cases, columns, cells, generated))
    for case in cases:
        write_atomic(folder / "cases" / f"{case.id}.html", case_page(case, columns, cells, results.get(case.id)))
    return len(cases)
