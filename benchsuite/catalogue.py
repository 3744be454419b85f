"""The catalogue as an index: its case files (discovery) and what each case explains.

A finding of the scanner or of ``benchsuite watch`` (a kind, with the parameters it is about) leads to the
cases whose ``explains=`` declares it, best first, with their fixes and where the catalogue's matrix saw
each fix work. The link is declared in the case files (``Case(explains=[Explains(...)])``), so a new case
extends the diagnosis without code here. Doctor, watch and a GradScanCallback given ``describe_known=
known_cases_text`` all ask here.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .harness.discover import (  # noqa: F401 (discovery, re-exported: the catalogue's one entry point)
    case_files,
    check_model_path,
    default_cases_dir,
    load_case,
    resolve,
    select,
)
from .harness.versions import PACKAGES, installed

# The watch/scanner finding a case's own Symptom shows: such a case reproduces the very evidence.
_SYMPTOM_FINDING = {"no_grad": "no-gradient", "unchanged": "never-changed", "no_trainable": "nothing-trainable",
                    "nonfinite_loss": "non-finite"}
MATRIX = Path("docs") / "results" / "matrix-catalogue.json"


# ---------------------------------------------------------------- versions


def _release(v: str):
    return Version(Version(v).base_version)


def holds(specs: dict[str, str], versions: dict) -> bool:
    """Every package in ``specs`` is in ``versions`` at a version its specifier admits (a missing one fails)."""
    for package, spec in (specs or {}).items():
        v = versions.get(package)
        if not v or not SpecifierSet(spec).contains(_release(v), prereleases=True):
            return False
    return True


def _installed_versions() -> dict:
    return {p: installed(p) for p in PACKAGES}


def _specs(specs: dict[str, str]) -> str:
    return ", ".join(f"{k}{v}" for k, v in specs.items()) or "every version"


def _have(specs: dict[str, str], versions: dict) -> str:
    return ", ".join(f"{k} {versions.get(k) or 'not installed'}" for k in specs)


# ---------------------------------------------------------------- verified fixes (the catalogue's matrix)


@lru_cache(maxsize=8)
def _matrix_cells(path: str) -> tuple:
    try:
        return tuple(json.loads(Path(path).read_text()).get("cells") or ())
    except (OSError, ValueError, AttributeError):
        return ()


def _matrix_path(cases_dir: Path) -> Path | None:
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
            if c["in_range"] and not c["affected"]:
                where = "affected every version"
            elif c["in_range"]:
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
