"""`benchsuite compare A.json B.json`: what changed between two run, matrix or bench results.

Exit code as diff's: 0 nothing changed, 1 something did, 2 the files cannot be compared.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import strictjson
from .bench.grid import label
from .common import envelope
from .harness.report import UsageError, agrees, check_output, write_atomic


def kind_of(doc) -> str:
    if isinstance(doc, dict):
        if doc.get("kind") in ("run", "matrix", "bench"):
            return doc["kind"]
        if "cells" in doc:
            return "matrix"
        if "results" in doc and "grid" in doc:
            return "bench"
        if "results" in doc and "summary" in doc:
            return "run"
    raise ValueError("not a run, matrix or bench result")


def load(path: str) -> tuple[str, dict]:
    try:
        doc = json.loads(Path(path).read_text())
        return kind_of(doc), doc
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None


def compare_run(a: dict, b: dict) -> list[dict]:
    ra, rb = ({r["id"]: r for r in d["results"]} for d in (a, b))
    out: list[dict] = []
    for cid in list(ra) + [c for c in rb if c not in ra]:
        x, y = ra.get(cid), rb.get(cid)
        if x is None or y is None:
            out.append({"item": cid, "what": "only in " + ("B" if x is None else "A"),
                        "a": x and x.get("status"), "b": y and y.get("status")})
            continue
        if x.get("status") != y.get("status") or agrees(x) != agrees(y):
            out.append({"item": cid, "what": "status", "a": f"{x.get('status')} (expected {x.get('expected')})",
                        "b": f"{y.get('status')} (expected {y.get('expected')})",
                        "regression": agrees(x) and not agrees(y)})
        fa = {f["name"]: f.get("works") for f in x.get("fixes", [])}
        fb = {f["name"]: f.get("works") for f in y.get("fixes", [])}
        for name in fa.keys() & fb.keys():
            if fa[name] != fb[name]:
                out.append({"item": f"{cid} fix {name}", "what": "works", "a": fa[name], "b": fb[name]})
    return out


def compare_matrix(a: dict, b: dict) -> list[dict]:
    ca, cb = ({(c["case"], c["env"]): c for c in d["cells"]} for d in (a, b))
    out: list[dict] = []
    for key in list(ca) + [k for k in cb if k not in ca]:
        x, y = ca.get(key), cb.get(key)
        item = f"{key[0]} @ {key[1]}"
        if x is None or y is None:
            out.append({"item": item, "what": "only in " + ("B" if x is None else "A"),
                        "a": x and x["status"], "b": y and y["status"]})
        elif x["status"] != y["status"] or x.get("agrees") != y.get("agrees"):
            out.append({"item": item, "what": "status", "a": x["status"], "b": y["status"],
                        "regression": bool(x.get("agrees")) and not y.get("agrees")})
    return out


BENCH_FIGURES = (("peak_memory_bytes", "peak memory", 2**20, "MiB", False),
                 ("step_time_s", "step time", 1, "s", False),
                 ("tokens_per_s", "tokens/s", 1, "", True))


def compare_bench(a: dict, b: dict, threshold: float) -> list[dict]:
    ra, rb = ({label(r): r for r in d["results"]} for d in (a, b))
    out: list[dict] = []
    for key in list(ra) + [k for k in rb if k not in ra]:
        x, y = ra.get(key), rb.get(key)
        if x is None or y is None:
            out.append({"item": key, "what": "only in " + ("B" if x is None else "A")})
            continue
        if x.get("status") != y.get("status"):
            out.append({"item": key, "what": "status", "a": x.get("status"), "b": y.get("status"),
                        "regression": x.get("status") == "ok"})
            continue
        if x.get("status") != "ok":
            continue
        for field, name, scale, unit, higher_better in BENCH_FIGURES:
            va, vb = x.get(field), y.get(field)
            if not va or vb is None:
                continue
            change = vb / va - 1
            if abs(change) > threshold:
                worse = change < 0 if higher_better else change > 0
                out.append({"item": key, "what": name, "a": round(va / scale, 3), "b": round(vb / scale, 3),
                            "unit": unit, "change": round(change, 4), "regression": worse})
        ga, gb = (r.get("gradients") or {} for r in (x, y))
        if ga and gb and ga.get("matches") != gb.get("matches"):
            # A configuration whose gradients no longer match its baseline is a bug, not a trade-off.
            worst = gb if ga.get("matches") else ga
            out.append({"item": key, "what": "gradients match the baseline", "a": ga.get("matches"),
                        "b": gb.get("matches"), "regression": bool(ga.get("matches")),
                        "worst": worst.get("worst"), "max_rel_error": worst.get("max_rel_error")})
        if x.get("checkpointing_took_effect") != y.get("checkpointing_took_effect"):
            out.append({"item": key, "what": "checkpointing took effect", "a": x.get("checkpointing_took_effect"),
                        "b": y.get("checkpointing_took_effect"),
                        "regression": bool(x.get("checkpointing_took_effect"))})
    return out


def main(*, a_path: str, b_path: str, threshold: float = 0.10, json_path: str | None = None) -> int:
    ka, a = load(a_path)
    kb, b = load(b_path)
    if ka != kb:
        raise UsageError(f"{a_path} is a {ka} result and {b_path} a {kb} result; compare two of the same kind")
    if not 0 <= threshold < 10:
        raise UsageError(f"--threshold {threshold}: a fraction such as 0.1 (10%)")
    check_output(json_path, "--json")
    changes = {"run": lambda: compare_run(a, b), "matrix": lambda: compare_matrix(a, b),
               "bench": lambda: compare_bench(a, b, threshold)}[ka]()
    quiet = json_path == "-"
    say = (lambda m: print(m, file=sys.stderr)) if quiet else print
    for c in changes:
        if "change" in c:
            say(f"{c['item']}: {c['what']} {c['a']} -> {c['b']} {c['unit']} ({100 * c['change']:+.0f}%)"
                + (" WORSE" if c.get("regression") else ""))
        elif "a" in c:
            why = (f" (worst {c['worst']}, relative error {c['max_rel_error']:.3g})"
                   if c.get("worst") and c.get("max_rel_error") is not None else "")
            say(f"{c['item']}: {c['what']} {c['a']} -> {c['b']}{why}" + (" WORSE" if c.get("regression") else ""))
        else:
            say(f"{c['item']}: {c['what']}")
    worse = sum(1 for c in changes if c.get("regression"))
    say(f"{ka} results: {len(changes)} change(s), {worse} for the worse"
        + (f" (bench figures: threshold {100 * threshold:.0f}%)" if ka == "bench" else ""))
    if json_path:
        write_atomic(json_path, strictjson.dumps(envelope("compare", {"of": ka,
                                            "a": a_path, "b": b_path, "threshold": threshold,
                                            "changes": changes}), indent=2, default=str))
    return 1 if changes else 0
