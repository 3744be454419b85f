"""What the watcher writes: the per-step log, the gradient signatures, its messages and its per-process summary
(read back by `benchsuite watch`, watch/cli.py)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import TextIO

from ..gradscan import verdicts as V
from . import kinds as K
from .env import ENV_JSON, PREFIX
from .names import compact


def _tagged(path: str, tag: str, default_ext: str) -> str:
    """PATH.<tag>.ext: one file of several (a rank's, a model's) beside the path the user gave."""
    root, ext = os.path.splitext(path)
    return f"{root}.{tag}{ext or default_ext}"


def rank_path(path: str | None, rank: int, world: int, default_ext: str = ".jsonl") -> str | None:
    if not path:
        return None
    return path if world <= 1 else _tagged(path, f"rank{rank}", default_ext)


def model_path(path: str, order: int) -> str:
    """--signature of the order-th model of a process: PATH itself for the first, PATH.model<k>.ext after it."""
    return path if order == 1 else _tagged(path, f"model{order}", ".json")


class StepLog:
    """--log: one JSON line per scan. A write that fails is said once; the run goes on."""

    def __init__(self, path: str | None, notes: list):
        self.path, self.notes = path, notes
        self.file: TextIO | None = None
        self.failed = False

    def write(self, report, step, w, m, counts, new) -> None:
        if not self.path or self.failed:
            return
        try:
            if self.file is None:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                self.file = open(self.path, "a", encoding="utf-8")
            from benchsuite.gradscan._records import log_line
            values = m.loss.values
            line = {**log_line(report), "rank": w.rank, "pid": os.getpid(), "model": m.label,
                    "source": "trainer" if m.trainer is not None else "optimizer", **counts,
                    "loss": _number(values[-1][1]) if values and values[-1][0] == step else None,
                    "lr": m.lr.last,
                    "scan_seconds": round(w.scan_seconds[-1], 6) if w.scan_seconds else None,
                    "confirmed": [{"kind": k, "names": v} for k, v in new]}
            self.file.write(json.dumps(line) + "\n")  # type: ignore[union-attr]
            self.file.flush()  # type: ignore[union-attr]
        except Exception as exc:
            self.failed = True
            self.notes.append(f"step log not written: {exc}")
            sys.stderr.write(f"{PREFIX} cannot write the step log {self.path}: {exc}; the run goes on\n")


def _number(v):
    return v if v == v and v not in (float("inf"), float("-inf")) else str(v)


def write_signature(w, optimizer, step: int, root, trainer_args, command, model: str | None) -> None:
    """--signature: the signature of every trainable parameter's gradient at this step, to the path of the
    process's next signature (model_path). Any failure is said once; the run goes on."""
    order = len(w.signatures) + 1
    path = model_path(w.sig_path, order)
    try:
        from .signatures import document, write
        group_params = [p for g in optimizer.param_groups for p in g["params"]]
        if root is None:
            from .structure import root_of
            root = root_of(group_params, w._names)
        pairs = [(n, p) for n, p in root.named_parameters() if p.requires_grad] if root is not None else []
        known = {id(p) for _, p in pairs}
        pairs += [(w._names.get(id(p), f"param{i}"), p) for i, p in enumerate(group_params)
                  if p.requires_grad and id(p) not in known]
        doc = document(pairs, step=step, rank=w.rank, world_size=w.world,
                       source="trainer" if trainer_args is not None else "optimizer",
                       optimizer=type(optimizer).__name__, command=command, argv=sys.argv, versions=versions(),
                       trainer=trainer_args)
        doc["model"] = {"order": order, "label": model}
        write(path, doc)
        entry = {"path": path, "step": step, "parameters": len(doc["signatures"]),
                 "none": sum(1 for d in doc["signatures"].values() if d["none"]), "model": model}
    except Exception as exc:  # never harms the run
        entry = {"error": f"{type(exc).__name__}: {exc}", "path": path, "model": model}
        w.notes.append(f"gradient signatures not written to {path}: {type(exc).__name__}: {exc}")
        sys.stderr.write(f"{PREFIX} cannot write the gradient signatures {path} "
                         f"({type(exc).__name__}: {exc}); the run goes on\n")
    w.signatures.append(entry)
    w.signature = w.signature or entry


def finding_text(m, kind: str, names: list[str]) -> str:
    """One finding as the console says it: its title, then its parameters or, for a finding about the run
    (the loss, the learning rate), its evidence."""
    if kind in K.RUN_LEVEL:
        d = m.tracker.details.get(kind) or {}
        title = K.title(kind) if kind != V.NO_SIGNAL or m.tracker.rl else "the gradient was exactly zero everywhere"
        return f"{title}: {d.get('evidence') or compact(names, 2)}"
    return f"{K.title(kind)} in {len(names)} parameter(s): {compact(names, 2)}"


def stop_message(w, m, where: str, kind: str, names: list[str], about: str) -> str:
    outputs = [x for x in (os.environ.get(ENV_JSON) and "the summary (--json)", w.log_path and "the step log (--log)")
               if x]
    listed = (" and ".join(outputs) + (" list" if len(outputs) > 1 else " lists") + " every name") if outputs else \
        "run with --json PATH or --log PATH for every name"
    listed = "" if kind in K.RUN_LEVEL else f"; {listed}"
    d = m.tracker.details.get(kind) or {}
    cause = d.get("cause") or V.cause(kind, {m.tracker.params[n].dtype for n in names if n in m.tracker.params})
    return f"{PREFIX} stopping at {where} (--policy raise): {finding_text(m, kind, names)}{listed}. " \
           f"Likely cause: {cause}{about}"


def summary(w) -> dict:
    med_scan = V.median(w.scan_seconds)
    steps = [s for o in w.opts.values() for s in o.step_seconds]
    med_step = V.median(steps)
    models = [m.summary() for m in w.models]
    scanned = [m for m in w.models if m.tracker.scans]
    last = scanned[-1] if scanned else None
    doc = {"rank": w.rank, "world_size": w.world, "pid": os.getpid(), "argv": sys.argv,
           "torch": w.torch, "trainers": w.trainers, "optimizers": len(w.opts),
           "optimizer_steps": w.steps, "first_step": w.first_step,
           "last_step": last.tracker.last_step if last else None,
           "scans": w.scans, "every": w.every, "confirm": w.confirm, "rl": w.rl,
           "params": last.last_counts if last else None,
           "overhead": {"first_scan_ms": _ms(w.first_scan_seconds), "median_scan_ms": _ms(med_scan),
                        "median_step_ms": _ms(med_step), "scans_timed": len(w.scan_seconds),
                        "fraction_of_step": (med_scan / med_step) if (med_scan and med_step) else None},
           "models": models, "findings": [f for s in models for f in s["findings"]],
           "zero_gradient_steps": [z for s in models for z in s["zero_gradient_steps"]],
           "error": w.error, "notes": w.notes, "log": w.log_path, "finished": w._finished,
           "signature": w.signature, "signatures": w.signatures, "stopped": w.stopped,
           # the libraries' versions, for the catalogue cases watch names (benchsuite.doctor, issue 15)
           "versions": versions() if w.steps else None}
    if len(models) == 1:
        doc["losses"] = models[0]["losses"]  # what `benchsuite doctor --log` reads from a watch report
    return doc


def save(folder: str, doc: dict) -> None:
    path = os.path.join(folder, f"proc-{os.getpid()}.json")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".proc-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


_VERSIONS: dict = {}


def versions() -> dict:
    """Installed versions of the packages catalogue cases declare (read once, after the first step;
    benchsuite.doctor matches findings with cases by them, issue 15)."""
    if not _VERSIONS:
        from importlib.metadata import PackageNotFoundError, version
        for name in ("torch", "transformers", "peft", "trl", "accelerate"):
            try:
                _VERSIONS[name] = version(name)
            except PackageNotFoundError:
                _VERSIONS[name] = None
    return _VERSIONS


def _ms(seconds):
    return round(1e3 * seconds, 4) if seconds is not None else None
