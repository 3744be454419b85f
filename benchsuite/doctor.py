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

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from . import strictjson

PROBE_MARK = "@@benchsuite-doctor@@"
CATEGORIES = ("applies", "cannot-judge", "not-for-model", "not-affected", "broken")
# The watch/scanner finding a case's own Symptom shows: such a case reproduces the very evidence.
_SYMPTOM_FINDING = {"no_grad": "no-gradient", "unchanged": "never-changed", "no_trainable": "nothing-trainable",
                    "nonfinite_loss": "non-finite"}
MATRIX = Path("docs") / "results" / "matrix-catalogue.json"


def add_arguments(p) -> None:
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="REQ",
                   help="judge a cached pinned environment (as `run --with`), e.g. transformers==4.57.6; "
                        "one per package, repeatable")
    p.add_argument("--run", action="store_true",
                   help="run the cases that apply there: which reproduce, which fixes work")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="with --run: on this local checkpoint folder (cases that support it)")
    p.add_argument("--cases-dir", default=None, metavar="DIR", help="a folder of case files (default: the catalogue)")
    p.add_argument("-k", dest="keyword", default=None, metavar="TEXT",
                   help="only cases whose id contains TEXT ('not TEXT' for the others)")
    p.add_argument("--json", default=None, metavar="PATH", help="the result as JSON (- for stdout)")
    p.add_argument("--markdown", default=None, metavar="PATH", help="the result as Markdown (- for stdout)")
    p.add_argument("--error", default=None, metavar="TEXT",
                   help="an error message or a whole pasted traceback (- reads stdin; a file's path reads the file): "
                        "the cases whose declared exception, message or warning explain it, best first")
    p.add_argument("--log", default=None, metavar="PATH",
                   help="a trainer_state.json (or its checkpoint folder), a Trainer/TRL console log or a watch --json "
                        "report: the cases that explain the signs it shows (NaN or flat loss, grad_norm 0, lr 0, no "
                        "eval_loss, ...), best first")
    p.add_argument("--all", action="store_true",
                   help="show every match (with --error/--log), or every case that applies one per line (without)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="with --run: per case (default 300)")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="with --run: cases at a time (default 2)")


# ---------------------------------------------------------------- versions


def _release(v: str):
    from packaging.version import Version
    return Version(Version(v).base_version)


def holds(specs: dict[str, str], versions: dict) -> bool:
    """Every package in ``specs`` is in ``versions`` at a version its specifier admits (a missing one fails)."""
    from packaging.specifiers import SpecifierSet
    for package, spec in (specs or {}).items():
        v = versions.get(package)
        if not v or not SpecifierSet(spec).contains(_release(v), prereleases=True):
            return False
    return True


def _installed_versions() -> dict:
    from .harness.versions import PACKAGES, installed
    return {p: installed(p) for p in PACKAGES}


def _specs(specs: dict[str, str]) -> str:
    return ", ".join(f"{k}{v}" for k, v in specs.items()) or "every version"


def _have(specs: dict[str, str], versions: dict) -> str:
    return ", ".join(f"{k} {versions.get(k) or 'not installed'}" for k in specs)


# ---------------------------------------------------------------- the probe (runs in the judged environment)


def probe(cases_dir: Path, model: str | None = None, keyword: str | None = None) -> dict:
    """Each case's standing in *this* Python: affected, requirements, fixes available. JSON-able."""
    from .harness.discover import case_files, load_case, select
    from .harness.execute import skip_reason
    from .harness.versions import environment, is_affected
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


# ---------------------------------------------------------------- verified fixes (the catalogue's matrix)


@lru_cache(maxsize=8)
def _matrix_cells(path: str) -> tuple:
    try:
        return tuple(json.loads(Path(path).read_text()).get("cells") or ())
    except (OSError, ValueError, AttributeError):
        return ()


def _matrix_path(cases_dir: Path) -> Path | None:
    from .harness.discover import default_cases_dir
    try:
        if Path(cases_dir).resolve() != default_cases_dir().resolve():
            return None
    except FileNotFoundError:
        return None
    p = Path(cases_dir).resolve().parent / MATRIX
    return p if p.is_file() else None


def verified(case_id: str, cases_dir: Path) -> dict[str, list[str]]:
    """{fix name: [environments where the case reproduced and the fix worked]} from the catalogue's matrix."""
    path = _matrix_path(cases_dir)
    out: dict[str, list[str]] = {}
    for cell in _matrix_cells(str(path)) if path else ():
        if cell.get("case") != case_id or cell.get("status") != "reproduced":
            continue
        for name, works in (cell.get("fixes") or {}).items():
            if works:
                out.setdefault(name, []).append(cell.get("env") or "?")
    return out


def _envs_text(envs: list[str]) -> str:
    """"transformers 4.35.2, 4.57.6" for single-pin environment labels, else the labels."""
    pins = [e.split("==") for e in envs]
    if all(len(p) == 2 for p in pins) and len({p[0] for p in pins}) == 1:
        return f"{pins[0][0]} " + ", ".join(p[1] for p in pins)
    return ", ".join(envs)


# ---------------------------------------------------------------- findings -> cases


@lru_cache(maxsize=4)
def _catalogue(cases_dir: str) -> tuple:
    """(metadata, symptom findings) of every loadable case in the folder; broken files are left out."""
    from .harness.discover import case_files, load_case
    out = []
    for path in case_files(Path(cases_dir)).values():
        try:
            case = load_case(path)
        except Exception:
            continue
        meta = case.metadata()
        meta["symptom_findings"] = [f for k, f in _SYMPTOM_FINDING.items() if getattr(case.symptom, k)]
        out.append(meta)
    return tuple(out)


def _default_dir() -> Path | None:
    from .harness.discover import default_cases_dir
    try:
        return default_cases_dir()
    except FileNotFoundError:
        return None


def known_cases(kind: str, names: list[str], versions: dict | None = None, context: dict | None = None,
                cases_dir: Path | None = None, limit: int = 3) -> list[dict]:
    """Catalogue cases whose ``explains`` covers a finding (``kind`` with these parameter ``names``), best
    first: those whose affected range (and ``applies``) holds for ``versions`` (default: installed here),
    then those whose own symptom shows the same evidence, then the catalogue's order. Each: id, title,
    references, affected, in_range, note and ``fixes``: the fixes declared to work and available at those
    versions, each with ``verified`` (environments of the catalogue matrix where it worked)."""
    cases_dir = Path(cases_dir) if cases_dir else _default_dir()
    if cases_dir is None:
        return []
    versions = versions if versions is not None else _installed_versions()
    context = context or {}
    found = []
    for order, meta in enumerate(_catalogue(str(cases_dir))):
        for ex in meta.get("explains") or []:
            if ex["finding"] != kind:
                continue
            if ex["params"] and not any(re.search(ex["params"], n) for n in names):
                continue
            if any(k in context and context[k] != v for k, v in ex["context"].items()):
                continue
            in_range = holds(meta["affected"], versions) and holds(meta["applies"], versions)
            proven = verified(meta["id"], cases_dir)
            fixes = [{"name": f["name"], "title": f["title"], "applies": f["applies"],
                      "verified": proven.get(f["name"], [])}
                     for f in meta["fixes"] if f["declared_works"] and holds(f["applies"], versions)]
            found.append(((not in_range, kind not in meta["symptom_findings"], order),
                          {"id": meta["id"], "title": meta["title"], "references": meta["references"],
                           "affected": meta["affected"], "in_range": in_range, "note": ex["note"],
                           "fixes": fixes}))
            break
    return [m for _, m in sorted(found, key=lambda x: x[0])][:limit]


def explain(source, versions: dict | None = None, trainer: bool | None = None) -> dict[str, list[dict]]:
    """{finding kind: known cases} for the open findings of a GradScanCallback or GradScanHook (or the list
    their ``findings()`` returns), or for the problems of a ScanReport from ``scan()``. See known_cases."""
    context = {} if trainer is None else {"trainer": trainer}
    if hasattr(source, "problems"):  # a ScanReport: one scan's problems
        pairs = [(p.kind, list(p.names)) for p in source.problems]
    else:
        found = source.findings() if hasattr(source, "findings") else source
        pairs = [(f["kind"], list(f.get("names") or [])) for f in found if f.get("status", "open") == "open"]
    out: dict[str, list[dict]] = {}
    for kind, names in pairs:
        out.setdefault(kind, known_cases(kind, names, versions, context))
    return out


explain_report = explain


def known_cases_text(kind: str, names: list[str], versions: dict | None = None) -> str:
    """One line for a finding's message: "known case: ID (fix: TITLE)", or "" when none is known."""
    try:
        hits = known_cases(kind, names, versions, limit=2)
    except Exception:
        return ""
    parts = [c["id"] + (f" (fix: {c['fixes'][0]['title']})" if c["fixes"] else "") for c in hits]
    return ("known case: " + "; ".join(parts)) if parts else ""


def _proc_context(s: dict) -> dict:
    ctx = {"distributed": (s.get("world_size") or 1) > 1}
    if s.get("trainers") is not None:
        ctx["trainer"] = s["trainers"] > 0
    return ctx


def watch_known_cases(procs: list[dict]) -> list[dict]:
    """The known cases for every open finding of a watched run (one entry per finding kind and context):
    the data of watch's "known cases" lines and of its --json ``known_cases``. Never raises."""
    try:
        merged: dict[tuple, dict] = {}
        for s in procs:
            if not s.get("optimizer_steps"):
                continue
            versions = s.get("versions") or _installed_versions()
            ctx = _proc_context(s)
            for f in s.get("findings") or []:
                if f.get("status") != "open":
                    continue
                key = (f["kind"], json.dumps(ctx, sort_keys=True), json.dumps(versions, sort_keys=True))
                entry = merged.setdefault(key, {"kind": f["kind"], "title": f.get("title", f["kind"]),
                                                "names": [], "versions": versions, "context": ctx})
                entry["names"] += [n for n in f.get("names") or [] if n not in entry["names"]]
        out = []
        for entry in merged.values():
            cases = known_cases(entry["kind"], entry["names"], entry["versions"], entry["context"])
            if cases:
                out.append({"kind": entry["kind"], "title": entry["title"],
                            "versions": {k: v for k, v in entry["versions"].items() if v}, "cases": cases})
        return out
    except Exception:  # the watch summary must never fail because of the catalogue
        return []


def watch_lines(procs: list[dict]) -> list[str]:
    """Lines for watch's summary: the catalogue cases that explain its open findings, and their fixes."""
    known = watch_known_cases(procs)
    if not known:
        return []
    lines = ["  known cases in the catalogue for these findings (`benchsuite doctor` lists what applies to "
             "your versions; `benchsuite run ID` reproduces one):"]
    for entry in known:
        for c in entry["cases"]:
            if c["in_range"]:
                where = f"affected {_specs(c['affected'])}: includes your {_have(c['affected'], entry['versions'])}"
            else:
                where = (f"declared affected {_specs(c['affected'])}, not your "
                         f"{_have(c['affected'], entry['versions'])}: the same setup made explicitly")
            lines.append(f"    {entry['title']} -> {c['id']}: {c['title']} ({where})")
            for fx in c["fixes"]:
                proof = (f"verified: worked with {_envs_text(fx['verified'])}" if fx["verified"]
                         else "declared to work; `benchsuite run " + c["id"] + "` checks it here")
                lines.append(f"      fix: {fx['title']} ({proof})")
    return lines


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


def main(args) -> int:
    from .harness.discover import check_model_path
    from .harness.envs import EnvError, ensure, parse_pins
    from .harness.report import UsageError, check_output, version, write_atomic
    cases_dir = args.cases_dir_path
    if args.jobs < 1 or args.timeout <= 0:
        raise UsageError("--jobs must be at least 1 and --timeout positive")
    model = check_model_path(args.model) if args.model else None
    check_output(args.json, "--json")
    check_output(args.markdown, "--markdown")
    if args.json == "-" and args.markdown == "-":
        raise UsageError("only one report can go to stdout (-)")
    if args.run and (args.error or args.log):
        raise UsageError("--run runs the cases that apply to an environment; with --error/--log, run the case "
                         "doctor names: benchsuite run ID")
    symptom = _read_symptom(args.error, args.log)
    log = (lambda m: print(m, file=sys.stderr))
    pins = parse_pins(args.with_, one_per_package=True, log=log) if args.with_ else {}
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
        data = _run_probe(python, cases_dir, model, args.keyword)
    except RuntimeError as exc:
        print(f"benchsuite doctor: {exc}", file=sys.stderr)
        return 1
    if symptom is not None:
        return _answer_symptom(args, symptom, data, pins, python, cases_dir, t0)
    for row in data["cases"]:
        proven = verified(row["id"], cases_dir) if row.get("category") == "applies" else {}
        for fx in row.get("fixes") or []:
            fx["verified"] = proven.get(fx["name"], [])
    doc = {"benchsuite_version": version(), "kind": "doctor", "pins": list(pins.values()),
           "python": python, "cases_dir": str(cases_dir), "model": model, "ran": bool(args.run), "all": bool(args.all),
           "environment": data["environment"], "cases": data["cases"]}
    if args.run:
        _run(doc, python, model, args)
    doc["duration_s"] = round(time.perf_counter() - t0, 1)
    quiet = "-" in (args.json, args.markdown)
    text = render(doc)
    print(text, file=sys.stderr if quiet else sys.stdout)
    if args.json:
        write_atomic(args.json, strictjson.dumps(doc, indent=2, default=str))
    if args.markdown:
        write_atomic(args.markdown, markdown(doc))
    for path in (args.json, args.markdown):
        if path and path != "-":
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _read_symptom(error: str | None, log: str | None) -> dict | None:
    """{"error": text} or {"log": read log} from --error/--log; UsageError for what cannot be read."""
    from .diagnose import logs
    from .harness.report import UsageError
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


def _answer_symptom(args, symptom: dict, data: dict, pins: dict, python: str, cases_dir: Path, t0: float) -> int:
    from .diagnose import ranking
    from .diagnose import report as symptom_report
    from .harness.report import version, write_atomic
    rows = data["cases"]
    if "error" in symptom:
        matches = ranking.by_error(symptom["error"], rows)
        shown = {"error": symptom["error"][-4000:]}
    else:
        matches = ranking.by_log(symptom["log"], rows)
        shown = {"log": {k: v for k, v in symptom["log"].items() if k != "text"}}
    doc = {"benchsuite_version": version(), "kind": "doctor", "pins": list(pins.values()), "python": python,
           "cases_dir": str(cases_dir), "environment": data["environment"], "symptom": shown,
           "matches": matches, "duration_s": round(time.perf_counter() - t0, 1)}
    quiet = "-" in (args.json, args.markdown)
    print(f"benchsuite doctor ({'with ' + ' '.join(doc['pins']) if doc['pins'] else 'this environment'}): "
          f"{_env_line(doc['environment'])}", file=sys.stderr if quiet else sys.stdout)
    print(symptom_report.render(doc, show_all=args.all), file=sys.stderr if quiet else sys.stdout)
    if args.json:
        write_atomic(args.json, strictjson.dumps(doc, indent=2, default=str))
    if args.markdown:
        write_atomic(args.markdown, symptom_report.markdown(doc))
    return 0


def _run(doc: dict, python: str, model: str | None, args) -> None:
    """Run the applying cases there (the run harness): on the model where they support it."""
    from .harness.run import run_cases
    rows = {r["id"]: r for r in doc["cases"] if r.get("category") == "applies"}
    groups = [([Path(r["file"]) for r in rows.values() if r.get("on_model")], model),
              ([Path(r["file"]) for r in rows.values() if not r.get("on_model")], None)]
    for paths, m in groups:
        if not paths:
            continue
        print(f"running {len(paths)} case(s)" + (f" on {m}" if m else "") + " ...", file=sys.stderr, flush=True)

        def done(r: dict) -> bool:
            if r["id"] in rows:
                rows[r["id"]]["run"] = {k: r.get(k) for k in ("status", "reason", "basis", "duration_s",
                                                               "symptom_seen", "fixes")}
                rows[r["id"]]["run"]["on_model"] = bool(m)
            print(f"  {r['id']}: {r.get('status')}", file=sys.stderr, flush=True)
            return False
        run_cases(paths, python=python, jobs=args.jobs, timeout=args.timeout, model=m, on_result=done)


def _probe_main(argv: list[str]) -> int:
    import argparse
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
