"""`benchsuite doctor`: from an environment, or a watch finding, to the known cases and their fixes.

Two ways in:

* an environment: ``benchsuite doctor [--with PIN ...]`` reads the versions installed (or builds the
  pinned environment as ``run --with`` does) and lists the catalogue's cases whose declared affected
  range holds there and whose requirements are met, with the symptom to look for and the fixes; cases
  that cannot be judged there (a package or a GPU missing) are listed as such. ``--run`` runs them there
  through the run harness and says which reproduce and which fixes work; ``--model PATH`` on your model.
* a finding: ``benchsuite watch`` (and ``known_cases`` for a GradScanCallback's report) names the cases
  whose ``explains=`` declares that finding, preferring those whose affected range holds for the watched
  process's versions, and their fixes (with where the catalogue matrix saw them work).

The link is declared in the case files (``Case(explains=[Explains(...)])``), so a new case extends the
diagnosis without code here. See docs/my-run-went-wrong.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import strictjson
from .catalogue import (  # noqa: F401 (re-exported: doctor's API before the catalogue module)
    _SYMPTOM_FINDING,
    MATRIX,
    _envs_text,
    _have,
    _installed_versions,
    _specs,
    explain,
    explain_report,
    holds,
    known_cases,
    known_cases_text,
    verified,
    watch_known_cases,
    watch_lines,
)
from .common import envelope
from .diagnose import logs, ranking
from .diagnose import report as symptom_report
from .harness import executor
from .harness.discover import case_files, check_model_path, load_case, select
from .harness.envs import EnvError, ensure, parse_pins
from .harness.execute import skip_reason
from .harness.report import UsageError, check_output, write_atomic
from .harness.versions import environment, is_affected

PROBE_MARK = "@@benchsuite-doctor@@"
CATEGORIES = ("applies", "cannot-judge", "not-for-model", "not-affected", "broken")


# ---------------------------------------------------------------- the probe (runs in the judged environment)


def probe(cases_dir: Path, model: str | None = None, keyword: str | None = None) -> dict:
    """Each case's standing in *this* Python: affected, requirements, fixes available. JSON-able."""
    env = environment()
    rows = []
    for path in select(list(case_files(cases_dir).values()), keyword):
        try:
            case = load_case(path)
        except Exception as exc:
            rows.append({"id": path.stem, "category": "broken", "reason": f"{type(exc).__name__}: {exc}"})
            continue
        row = case.metadata()
        row["symptom_findings"] = [f for k, f in _SYMPTOM_FINDING.items() if getattr(case.symptom, k)]
        for fx in row["fixes"]:
            fx["available"] = not fx["applies"] or is_affected(fx["applies"], env)
        if case.applies and not is_affected(case.applies, env):
            row.update(category="not-affected", reason=f"the reported setup does not exist here (needs "
                                                       f"{_specs(case.applies)}; here {_have(case.applies, env)})")
        elif not is_affected(case.affected, env):
            row.update(category="not-affected",
                       reason=f"affected {_specs(case.affected)}; here {_have(case.affected, env)}")
        else:
            reason = skip_reason(case, None, env)
            model_reason = skip_reason(case, model, env) if (model and not reason) else None
            if reason:
                row.update(category="cannot-judge", reason=reason)
            elif model_reason and case.model_families:
                row.update(category="not-for-model", reason=model_reason)
            else:
                row.update(category="applies", reason=None, on_model=bool(model and not model_reason))
        row["file"] = str(path)
        rows.append(row)
    return {"environment": env, "cases": rows}


def _run_probe(python: str, cases_dir: Path, model: str | None, keyword: str | None) -> dict:
    cmd = [python, "-m", "benchsuite.doctor", "--probe", str(Path(cases_dir).resolve())]
    if model:
        cmd += ["--model", str(Path(model).resolve())]
    if keyword:
        cmd += ["-k", keyword]
    # not from the current folder: `-m` would put a checkout there ahead of the environment's benchsuite
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          cwd=tempfile.gettempdir())
    for line in proc.stdout.splitlines():
        if line.startswith(PROBE_MARK):
            return json.loads(line[len(PROBE_MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"could not read the environment with {python} (exit {proc.returncode}): {tail[0]}")


# ---------------------------------------------------------------- benchsuite doctor


def _env_line(env: dict) -> str:
    return ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "transformers", "peft", "accelerate", "trl")
                     if env.get(k)) + (f"; device {env['device']}" if env.get("device") else "")


def _fix_lines(c: dict, run: dict | None) -> list[str]:
    ran = {f["name"]: f for f in (run or {}).get("fixes") or []}
    out = []
    for fx in c["fixes"]:
        mark = "+" if fx["declared_works"] else "-"
        text = f"      {mark} {fx['title']}"
        if fx["applies"]:
            text += f" [applies {_specs(fx['applies'])}]"
        if not fx["declared_works"]:
            text += " (circulates, does not work" + (f": {fx['note']}" if fx["note"] else "") + ")"
        if not fx["available"]:
            text += " -- not available in this environment"
        elif fx.get("verified"):
            text += f" -- verified with {_envs_text(fx['verified'])}"
        if run is not None and fx["name"] in ran:
            r = ran[fx["name"]]
            here = ("n/a here" if r.get("not_applicable") else "error: " + r["error"][:120] if r.get("error")
                    else "works here" if r.get("works") else "does not work here")
            text += f"; {here}"
        out.append(text)
    return out


def _run_line(r: dict) -> str:
    status = r.get("status")
    where = "here, on your model" if r.get("on_model") else "here"
    if status == "reproduced":
        return f"    {where}: REPRODUCED ({r.get('duration_s') or 0:.1f} s)"
    if status == "not-reproduced":
        return f"    {where}: not reproduced ({r.get('duration_s') or 0:.1f} s): {(r.get('basis') or '')[:160]}"
    if status == "skipped":
        return f"    {where}: not run: {r.get('reason')}"
    return f"    {where}: {status}: {(r.get('reason') or '')[:200]}"


def render(doc: dict) -> str:
    rows = doc["cases"]
    by = {c: [r for r in rows if r.get("category") == c] for c in CATEGORIES}
    head = "with " + " ".join(doc["pins"]) if doc.get("pins") else "this environment"
    lines = [f"benchsuite doctor ({head}): {_env_line(doc['environment'])}"]
    if doc.get("model"):
        lines.append(f"model: {doc['model']}")
    lines.append("")
    applies = by["applies"]
    specific = [c for c in applies if c.get("affected")]
    everywhere = [c for c in applies if not c.get("affected")]
    lines.append(f"{len(applies)} known failure(s) apply here (affected range holds, requirements met): "
                 f"{len(specific)} declared for a version range that includes these versions, "
                 f"{len(everywhere)} for every version" if applies else
                 "no known failure of the catalogue applies here")
    # the every-version patterns fold into one line per family, unless asked for (--all), run (--run: their
    # results matter) or few enough to read
    fold = not doc.get("all") and not doc.get("ran") and len(everywhere) > 5
    shown = specific if fold else specific + everywhere
    for i, c in enumerate(shown):
        lines.append("")
        if i == 0 and specific:
            lines.append("-- specific to these versions:")
        if i == len(specific) and everywhere:
            lines.append("-- at every version:")
        lines.append(f"  {c['id']}")
        lines.append(f"    {c['title']}")
        lines.append(f"    affected: {_specs(c['affected'])}; refs: {', '.join(c['references'])}")
        lines.append(f"    look for: {c['symptom']}")
        if c.get("explains"):
            lines.append("    watch shows it as: " + "; ".join(
                e["finding"] + (f" in /{e['params']}/" if e["params"] else "")
                + (f" ({', '.join(f'{k}={v}' for k, v in e['context'].items())})" if e["context"] else "")
                for e in c["explains"]))
        if c.get("fixed_in"):
            lines.append(f"    fixed in: {c['fixed_in']}")
        if c.get("run"):
            lines.append(_run_line(c["run"]))
        lines.append("    fixes:")
        lines.extend(_fix_lines(c, c.get("run")))
    if everywhere and fold:
        lines += ["", f"-- at every version ({len(everywhere)}: usage patterns that fail whatever the versions; "
                      f"`doctor --all` shows each, `doctor --error TEXT` / `--log PATH` finds yours):"]
        families: dict[str, list[str]] = {}
        for c in everywhere:
            families.setdefault(c.get("family") or "no family", []).append(c["id"])
        lines += [f"  {fam} ({len(ids)}): {', '.join(ids)}" for fam, ids in sorted(families.items())]
    if by["cannot-judge"]:
        lines.append("")
        lines.append(f"{len(by['cannot-judge'])} cannot be judged here (their affected range holds):")
        lines.extend(f"  {c['id']}: {c['reason']} -- {c['title']}" for c in by["cannot-judge"])
    if by["not-for-model"]:
        lines.append("")
        lines.append(f"{len(by['not-for-model'])} do not apply to this model:")
        lines.extend(f"  {c['id']}: {c['reason']}" for c in by["not-for-model"])
    if by["broken"]:
        lines.append("")
        lines.extend(f"  {c['id']}: BROKEN CASE FILE: {c['reason']}" for c in by["broken"])
    if by["not-affected"]:
        lines.append("")
        lines.append(f"{len(by['not-affected'])} other case(s) do not apply to these versions: "
                     + ", ".join(c["id"] for c in by["not-affected"]))
    if doc.get("ran"):
        rep = sum(1 for c in applies if (c.get("run") or {}).get("status") == "reproduced")
        lines.append(f"--run: {rep} of {len(applies)} reproduced here")
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    rows = doc["cases"]
    head = "with `" + " ".join(doc["pins"]) + "`" if doc.get("pins") else "this environment"
    out = [f"# benchsuite doctor ({head})", "", f"Environment: {_env_line(doc['environment'])}", ""]
    for cat, title in (("applies", "Known failures that apply here"), ("cannot-judge", "Cannot be judged here"),
                       ("not-for-model", "Not for this model"), ("not-affected", "Not affected here")):
        sel = [r for r in rows if r.get("category") == cat]
        if not sel:
            continue
        out += [f"## {title} ({len(sel)})", "", "| case | affected | symptom | fixes | here |", "|---|---|---|---|---|"]
        for c in sel:
            fixes = "<br>".join(("+ " if f["declared_works"] else "- ") + f["title"].replace("|", "\\|")
                                + (f" (applies {_specs(f['applies'])})" if f["applies"] else "")
                                for f in c.get("fixes") or [])
            here = (c.get("run") or {}).get("status") or c.get("reason") or ""
            out.append(f"| `{c['id']}` | {_specs(c.get('affected') or {})} | "
                       f"{(c.get('symptom') or '').replace('|', '/')} | {fixes} | {here} |")
        out.append("")
    return "\n".join(out)


def main(*, cases_dir: Path, with_: list[str], run_cases: bool = False, model: str | None = None,
         keyword: str | None = None, json_path: str | None = None, markdown_path: str | None = None,
         error_text: str | None = None, log_path: str | None = None, show_all: bool = False,
         timeout: float = 300.0, jobs: int = 2) -> int:
    if jobs < 1 or timeout <= 0:
        raise UsageError("--jobs must be at least 1 and --timeout positive")
    model = check_model_path(model) if model else None
    check_output(json_path, "--json")
    check_output(markdown_path, "--markdown")
    if json_path == "-" and markdown_path == "-":
        raise UsageError("only one report can go to stdout (-)")
    if run_cases and (error_text or log_path):
        raise UsageError("--run runs the cases that apply to an environment; with --error/--log, run the case "
                         "doctor names: benchsuite run ID")
    symptom = _read_symptom(error_text, log_path)

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    pins = parse_pins(with_, one_per_package=True, log=log) if with_ else {}
    python = sys.executable
    if pins:
        try:
            python = str(ensure(list(pins.values()), log=log))
        except EnvError as exc:
            print(f"benchsuite doctor: environment [{' '.join(pins.values())}] could not be built: {exc}",
                  file=sys.stderr)
            return 1
    t0 = time.perf_counter()
    try:
        data = _run_probe(python, cases_dir, model, keyword)
    except RuntimeError as exc:
        print(f"benchsuite doctor: {exc}", file=sys.stderr)
        return 1
    if symptom is not None:
        return _answer_symptom(symptom, data, pins, python, cases_dir, t0, json_path=json_path,
                               markdown_path=markdown_path, show_all=show_all)
    for row in data["cases"]:
        proven = verified(row["id"], cases_dir) if row.get("category") == "applies" else {}
        for fx in row.get("fixes") or []:
            fx["verified"] = proven.get(fx["name"], [])
    doc = envelope("doctor", {"pins": list(pins.values()),
           "python": python, "cases_dir": str(cases_dir), "model": model, "ran": bool(run_cases), "all": bool(show_all),
           "environment": data["environment"], "cases": data["cases"]})
    if run_cases:
        _run(doc, model, jobs=jobs, timeout=timeout, log=log)
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    quiet = "-" in (json_path, markdown_path)
    text = render(doc)
    print(text, file=sys.stderr if quiet else sys.stdout)
    if json_path:
        write_atomic(json_path, strictjson.dumps(doc, indent=2, default=str))
    if markdown_path:
        write_atomic(markdown_path, markdown(doc))
    for path in (json_path, markdown_path):
        if path and path != "-":
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _read_symptom(error: str | None, log: str | None) -> dict | None:
    """{"error": text} or {"log": read log} from --error/--log; UsageError for what cannot be read."""
    if error is not None and log is not None:
        raise UsageError("give --error or --log, not both (a console log's tracebacks are read with --log)")
    if error is not None:
        if error == "-":
            text = sys.stdin.read()
        elif "\n" not in error and len(error) < 4096 and os.path.isfile(os.path.expanduser(error)):
            text = Path(error).expanduser().read_text(encoding="utf-8", errors="replace")
        else:
            text = error
        if not text.strip():
            raise UsageError("--error: the text is empty (paste the error message or traceback, or - for stdin)")
        return {"error": text}
    if log is not None:
        try:
            return {"log": logs.read(log)}
        except logs.LogError as exc:
            raise UsageError(f"--log: {exc}") from None
    return None


def _answer_symptom(symptom: dict, data: dict, pins: dict, python: str, cases_dir: Path, t0: float, *,
                    json_path: str | None, markdown_path: str | None, show_all: bool) -> int:
    rows = data["cases"]
    if "error" in symptom:
        matches = ranking.by_error(symptom["error"], rows)
        shown = {"error": symptom["error"][-4000:]}
    else:
        matches = ranking.by_log(symptom["log"], rows)
        shown = {"log": {k: v for k, v in symptom["log"].items() if k != "text"}}
    doc = envelope("doctor", {"pins": list(pins.values()), "python": python,
           "cases_dir": str(cases_dir), "environment": data["environment"], "symptom": shown,
           "matches": matches, "duration_s": round(time.perf_counter() - t0, 1)})
    quiet = "-" in (json_path, markdown_path)
    print(f"benchsuite doctor ({'with ' + ' '.join(doc['pins']) if doc['pins'] else 'this environment'}): "
          f"{_env_line(doc['environment'])}", file=sys.stderr if quiet else sys.stdout)
    print(symptom_report.render(doc, show_all=show_all), file=sys.stderr if quiet else sys.stdout)
    if json_path:
        write_atomic(json_path, strictjson.dumps(doc, indent=2, default=str))
    if markdown_path:
        write_atomic(markdown_path, symptom_report.markdown(doc))
    return 0


def _run(doc: dict, model: str | None, *, jobs: int, timeout: float, log) -> None:
    """Run the applying cases there (the executor, in doctor's environment): on the model where they support it."""
    rows = {r["id"]: r for r in doc["cases"] if r.get("category") == "applies"}
    groups = [([Path(r["file"]) for r in rows.values() if r.get("on_model")], model),
              ([Path(r["file"]) for r in rows.values() if not r.get("on_model")], None)]
    for paths, m in groups:
        if not paths:
            continue
        print(f"running {len(paths)} case(s)" + (f" on {m}" if m else "") + " ...", file=sys.stderr, flush=True)

        def done(r: dict, cell: dict, m=m) -> bool:
            if r["id"] in rows:
                rows[r["id"]]["run"] = {k: r.get(k) for k in ("status", "reason", "basis", "duration_s",
                                                               "symptom_seen", "fixes")}
                rows[r["id"]]["run"]["on_model"] = bool(m)
            print(f"  {r['id']}: {r.get('status')}", file=sys.stderr, flush=True)
            return False
        executor.run_local(paths, [doc["pins"]], jobs=jobs, timeout=timeout, model=m, on_result=done,
                           progress_lines=False, log=log)


def _probe_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchsuite.doctor")
    ap.add_argument("--probe", required=True, metavar="CASES_DIR")
    ap.add_argument("--model", default=None)
    ap.add_argument("-k", dest="keyword", default=None)
    a = ap.parse_args(argv)
    data = probe(Path(a.probe), a.model, a.keyword)
    print(PROBE_MARK + json.dumps(data, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
