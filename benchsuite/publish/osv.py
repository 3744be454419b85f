"""The catalogue in the OSV format (https://ossf.github.io/osv-schema/): one record per case, so tools that
read OSV (scanners, dashboards) can consume the bisected ranges.

A case's declared ``affected`` becomes, per package, an ``ECOSYSTEM`` range of ``PyPI`` versions: ``>=A``
gives ``introduced: A``, ``<B`` gives ``fixed: B``, ``<=B`` gives ``last_affected: B``, ``==V`` gives
``introduced: V, last_affected: V``; a range without a lower bound starts at ``introduced: "0"``. A case
affected at every version (a usage pattern, ``affected={}``) has no ``affected`` entry: there is no version
to upgrade to, and ``database_specific.every_version`` says so. Specifiers OSV cannot express (``!=``, ``~=``)
are kept as text in ``database_specific.affected``. Ids use the ``x_`` prefix of databases not registered
with OSV: ``x_benchsuite-<case id>``.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from .. import strictjson
from ..harness.report import write_atomic

SCHEMA_VERSION = "1.7.5"
ID_PREFIX = "x_benchsuite-"


def _events(spec: str) -> list[dict] | None:
    """OSV events for one specifier set, or None when it has a clause OSV cannot express."""
    introduced, fixed, last = "0", None, None
    for clause in (c.strip() for c in spec.split(",") if c.strip()):
        m = re.fullmatch(r"(>=|<=|==|<|>)\s*([\w.!+-]+)", clause)
        if not m or m.group(1) == ">":
            return None
        op, v = m.groups()
        if op == ">=":
            introduced = v
        elif op == "<":
            fixed = v
        elif op == "<=":
            last = v
        else:
            introduced, last = v, v
    events = [{"introduced": introduced}]
    if fixed:
        events.append({"fixed": fixed})
    elif last:
        events.append({"last_affected": last})
    return events


def reference(ref: str) -> dict:
    m = re.fullmatch(r"([\w.-]+)/([\w.-]+)#(\d+)", ref)
    if m:
        return {"type": "REPORT", "url": f"https://github.com/{m.group(1)}/{m.group(2)}/issues/{m.group(3)}"}
    m = re.fullmatch(r"([\w.-]+)/([\w.-]+)@([^:]+):(.+)", ref)
    if m:
        return {"type": "WEB", "url": f"https://github.com/{m.group(1)}/{m.group(2)}/blob/{m.group(3)}/{m.group(4)}"}
    return {"type": "WEB", "url": ref}


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def record(meta: dict, modified: float) -> dict:
    """One OSV record from a case's metadata (``Case.metadata()``); ``modified``: seconds since the epoch."""
    affected, unexpressed = [], {}
    for package, spec in (meta.get("affected") or {}).items():
        events = _events(spec)
        if events is None:
            unexpressed[package] = spec
            continue
        affected.append({"package": {"ecosystem": "PyPI", "name": package},
                         "ranges": [{"type": "ECOSYSTEM", "events": events}]})
    fixes = "\n".join(f"- {'works' if f['declared_works'] else 'circulates, does not work'}: {f['title']}"
                      + (f" ({f['note']})" if f.get("note") else "") for f in meta.get("fixes") or [])
    details = "\n\n".join(filter(None, [
        f"Symptom: {meta.get('symptom', '')}",
        f"Fixes:\n{fixes}" if fixes else "",
        f"Fixed in: {meta['fixed_in']}" if meta.get("fixed_in") else "",
        meta.get("notes") or "",
        f"Reproduce: benchsuite run {meta['id']}"]))
    specific = {"family": meta.get("family") or None, "tags": meta.get("tags") or [],
                "every_version": not meta.get("affected"), "requires": meta.get("requires") or [],
                "command": f"benchsuite run {meta['id']}"}
    if unexpressed:
        specific["affected"] = unexpressed
    if meta.get("applies"):
        specific["applies"] = meta["applies"]
    out = {"schema_version": SCHEMA_VERSION, "id": ID_PREFIX + meta["id"], "modified": _stamp(modified),
           "summary": meta["title"][:200], "details": details,
           "references": [reference(r) for r in meta.get("references") or []],
           "database_specific": specific}
    if affected:
        out["affected"] = affected
    return out


def export(cases: list[tuple[dict, Path]], folder: Path) -> list[Path]:
    """Write ``<id>.json`` per case into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for meta, path in cases:
        target = folder / f"{ID_PREFIX}{meta['id']}.json"
        write_atomic(target, strictjson.dumps(record(meta, path.stat().st_mtime), default=str))
        written.append(target)
    return written
