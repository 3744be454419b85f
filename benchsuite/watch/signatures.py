"""Gradient signature files: what `benchsuite watch --signature PATH` writes and `benchsuite compare-grads` reads.

One file per rank and per model (a process that trains several in turn writes PATH, PATH.model2.json, ...): at
each optimizer's N-th step (``--signature-step``, default 1), in the optimizer's step pre-hook, so after
GradScaler's unscale, after gradient clipping, with the whole accumulated gradient, before the update, the
signature (``benchsuite.gradscan.signature``: exact sum of squares, non-finite count and a 128-number sketch) of
every trainable parameter's ``.grad``, named as the watcher names parameters (``compare.normalise_name``: wrappers'
segments dropped). A ``.grad`` that is None is recorded as such.

    {"benchsuite_version": ..., "kind": "gradient-signatures", "format": 1,
     "step": 1, "rank": 0, "world_size": 1, "pid": ..., "source": "trainer" | "optimizer",
     "optimizer": "AdamW", "command": [...], "argv": [...], "versions": {"torch": ..., ...},
     "trainer_args": {...} | null, "dtypes": {"parameters": {"float32": 18}, "gradients": {...}},
     "parameters": {name: {"shape": [...], "dtype": "float32", "grad_dtype": "float32" | null}},
     "signatures": {name: Signature.to_dict()},
     "model": {"order": 1, "label": "Trainer #1" | null}}   (added after format 1's first files: may be absent)

Two files are compared parameter by parameter (b against the reference a) by
``compare.compare_signatures``; see :func:`main` for the command.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .. import __version__, strictjson
from ..common import UsageError, check_output, envelope, write_atomic
from ..gradscan.compare import TOLERANCES, compare_signatures, normalise_name
from ..gradscan.signature import Signature, signature
from .names import compact

KIND = "gradient-signatures"
FORMAT = 1

# Training arguments worth recording beside the gradients (what changes them, or explains a difference).
_TRAINER_ARGS = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_grad_norm", "learning_rate",
                 "fp16", "bf16", "gradient_checkpointing", "gradient_checkpointing_kwargs", "activation_checkpointing",
                 "activation_checkpointing_kwargs", "seed",
                 "average_tokens_across_devices")


class SignatureFileError(ValueError):
    """A file that cannot be read as a gradient signature file (the message is one line)."""


def _dtype(t) -> str:
    return str(t.dtype).replace("torch.", "")


def trainer_args(args) -> dict | None:
    if args is None:
        return None
    out = {}
    for key in _TRAINER_ARGS:
        if hasattr(args, key):
            value = getattr(args, key)
            out[key] = value if isinstance(value, (bool, int, float, str, type(None), dict, list)) else str(value)
    return out


def document(pairs, *, step, rank, world_size, source, optimizer, command, argv, versions,
             trainer=None) -> dict:
    """The file's content for the (name, parameter) pairs: one signature per parameter's ``.grad``."""

    parameters, signatures = {}, {}
    dtypes: dict[str, dict[str, int]] = {"parameters": {}, "gradients": {}}
    for name, p in pairs:
        name = normalise_name(name)
        if name in signatures:  # the same name twice after normalising: keep the first, as compare would
            continue
        grad = p.grad
        signatures[name] = signature(grad, numel=p.numel()).to_dict()
        parameters[name] = {"shape": list(p.shape), "dtype": _dtype(p),
                            "grad_dtype": _dtype(grad) if grad is not None else None}
        dtypes["parameters"][_dtype(p)] = dtypes["parameters"].get(_dtype(p), 0) + 1
        key = _dtype(grad) if grad is not None else "none"
        dtypes["gradients"][key] = dtypes["gradients"].get(key, 0) + 1
    return {"benchsuite_version": __version__, "kind": KIND, "format": FORMAT, "step": step, "rank": rank,
            "world_size": world_size, "pid": os.getpid(), "source": source, "optimizer": optimizer,
            "command": command, "argv": list(argv), "versions": dict(versions or {}),
            "trainer_args": trainer_args(trainer), "dtypes": dtypes, "parameters": parameters,
            "signatures": signatures}


def write(path: str, doc: dict) -> None:
    """Write ``doc`` to ``path`` through a temporary file in the same folder (readers never see half a file).
    A path, never stdout: "-" is a file of that name here."""
    write_atomic(Path(path).absolute(), json.dumps(doc))


def load(path: str):
    """(metadata, {name: Signature}) of a signature file; SignatureFileError with a one-line reason otherwise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SignatureFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SignatureFileError(f"{path}: is a folder, not a signature file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureFileError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SignatureFileError(f"{path}: not JSON ({exc}); expected a file written by "
                                 "benchsuite watch --signature") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        what = f"a '{doc.get('kind')}' result" if isinstance(doc, dict) and doc.get("kind") else "not a signature file"
        raise SignatureFileError(f"{path}: {what}; expected a gradient signature file written by "
                                 "benchsuite watch --signature")
    raw = doc.get("signatures")
    if not isinstance(raw, dict):
        raise SignatureFileError(f"{path}: has no 'signatures' mapping")
    sigs = {}
    for name, d in raw.items():
        try:
            sigs[name] = Signature.from_dict(d)
        except (TypeError, ValueError):
            raise SignatureFileError(f"{path}: the signature of {name!r} is malformed") from None
    meta = {k: v for k, v in doc.items() if k != "signatures"}
    meta["path"] = str(path)
    return meta, sigs


# ---------------------------------------------------------------- benchsuite compare-grads

def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def _describe(meta: dict) -> str:
    v = meta.get("versions") or {}
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "peft") if v.get(k))
    where = f"step {meta.get('step')}"
    if (meta.get("world_size") or 1) > 1:
        where += f", rank {meta.get('rank')} of {meta.get('world_size')}"
    if (meta.get("model") or {}).get("label"):  # which model of the process (a sweep writes one file per model)
        where += f" of {meta['model']['label']}"
    cmd = meta.get("command") or meta.get("argv") or []
    text = " ".join("<code>" if "\n" in str(c) else str(c) for c in cmd)  # python -c's program as <code>
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{where}, {len(meta.get('parameters') or {})} parameters" + (f", {libs}" if libs else "") + \
        (f": {text}" if text else "")


def compare_files(a_path: str, b_path: str, *, rtol: float):
    """(report, shape_mismatch, meta_a, meta_b): the comparison of two signature files."""
    meta_a, a = load(a_path)
    meta_b, b = load(b_path)
    a = {normalise_name(k): v for k, v in a.items()}
    b = {normalise_name(k): v for k, v in b.items()}
    # A parameter whose shape differs between the runs is a difference to report, not a crash.
    shape_mismatch = []
    for name in [n for n in a if n in b]:
        sa, sb = a[name], b[name]
        if not (sa.none or sb.none) and (sa.numel != sb.numel or len(sa.proj) != len(sb.proj)):
            shape_mismatch.append({"name": name, "numel_a": sa.numel, "numel_b": sb.numel})
    for m in shape_mismatch:
        del a[m["name"]], b[m["name"]]
    return compare_signatures(a, b, rtol=rtol), shape_mismatch, meta_a, meta_b


def render(report, shape_mismatch, meta_a, meta_b, limit: int = 12) -> str:
    lines = [f"A: {meta_a['path']} ({_describe(meta_a)})", f"B: {meta_b['path']} ({_describe(meta_b)})"]
    if meta_a.get("step") != meta_b.get("step"):
        lines.append(f"note: the files are of different steps ({meta_a.get('step')} and {meta_b.get('step')}): "
                     "their gradients are not expected to match")
    worst = report.worst
    worst_rec = next((r for r in report.records if r.name == worst), None)
    cos = "-" if report.min_cosine is None else f"{report.min_cosine:.6f}"
    named = f" ({worst})" if worst_rec is not None and worst_rec.rel_error else ""
    lines.append(f"{len(report.records)} parameters in both (signature estimate, rtol {report.rtol:g}): max relative "
                 f"error {_fmt(report.max_rel_error)}{named}, min cosine {cos}")
    if report.both_none:
        lines.append(f"  no gradient in both runs ({len(report.both_none)}, not a difference): "
                     f"{compact(report.both_none, 2)}")
    differing = report.differing + [m["name"] for m in shape_mismatch]
    if not differing:
        lines.append("verdict: MATCH: every parameter's gradient agrees within the bound")
        return "\n".join(lines)
    total = len(set([r.name for r in report.records] + report.only_in_a + report.only_in_b +
                    [m["name"] for m in shape_mismatch]))
    lines.append(f"verdict: DIFFER: {len(differing)} of {total} parameters")
    groups = [("no gradient in B", [r.name for r in report.records if r.none_b and not r.none_a]),
              ("no gradient in A", [r.name for r in report.records if r.none_a and not r.none_b]),
              ("non-finite values", [r.name for r in report.records if not r.matches and not r.none_one_side
                                     and (r.nonfinite_a or r.nonfinite_b)]),
              (f"relative error above {report.rtol:g}", [r.name for r in report.records if not r.matches
                                                          and r.rel_error is not None]),
              ("trainable in A only", report.only_in_a), ("trainable in B only", report.only_in_b),
              ("shape differs", [m["name"] for m in shape_mismatch])]
    for title, names in groups:
        if names:
            lines.append(f"  {title} ({len(names)}): {compact(names, 3)}")
    bad = sorted((r for r in report.records if not r.matches),
                 key=lambda r: (not (r.none_one_side or r.nonfinite_a + r.nonfinite_b),
                                -(r.rel_error if r.rel_error is not None else float("inf"))))
    for r in bad[:limit]:
        lines.append(f"    {r.name}: {r.reason}")
    for m in shape_mismatch[:max(0, limit - len(bad))]:
        lines.append(f"    {m['name']}: {m['numel_a']} elements in A, {m['numel_b']} in B")
    shown = min(len(bad), limit) + min(len(shape_mismatch), max(0, limit - len(bad)))
    if len(bad) + len(shape_mismatch) > shown:
        lines.append(f"    ... and {len(bad) + len(shape_mismatch) - shown} more (--json lists every one)")
    return "\n".join(lines)


def main(*, a: str, b: str, rtol: float | None = None, precision: str | None = None,
         json_path: str | None = None) -> int:
    """`benchsuite compare-grads`: exit 0 when every parameter's gradient matches, 1 when some differ."""
    rtol_arg = rtol
    if rtol_arg is not None and not rtol_arg > 0:
        raise UsageError(f"--rtol must be positive, not {rtol_arg:g}")
    rtol = rtol_arg if rtol_arg is not None else TOLERANCES[precision or "fp32"]
    check_output(json_path, "--json")
    try:
        report, shape_mismatch, meta_a, meta_b = compare_files(a, b, rtol=rtol)
    except SignatureFileError as exc:
        raise UsageError(str(exc)) from None
    matches = report.ok and not shape_mismatch
    if json_path != "-":
        print(render(report, shape_mismatch, meta_a, meta_b))
    if json_path:
        doc = envelope("compare-grads", {"a": a, "b": b,
               "verdict": "match" if matches else "differ",
               "meta_a": {k: meta_a.get(k) for k in ("step", "rank", "world_size", "command", "versions",
                                                    "trainer_args", "dtypes")},
               "meta_b": {k: meta_b.get(k) for k in ("step", "rank", "world_size", "command", "versions",
                                                    "trainer_args", "dtypes")},
               **report.to_dict(records=True), "shape_mismatch": shape_mismatch})
        doc["matches"] = matches
        doc["differing"] = report.differing + [m["name"] for m in shape_mismatch]
        write_atomic(json_path, strictjson.dumps(doc, indent=2))
        if json_path != "-":
            print(f"wrote {json_path}", file=sys.stderr)
    return 0 if matches else 1
