"""The watcher inside the watched process.

Nothing heavy happens at start-up: post-import hooks wait for torch.optim.optimizer (then a global
optimizer step pre-hook is registered: every optimizer of every loop is covered) and for
transformers.trainer (then every Trainer, subclasses included, gets a callback that scans the model
at on_pre_optimizer_step; its optimizer is then left to the callback). Configuration comes from
environment variables set by `benchsuite watch`.
"""
from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time

ENV_DIR = "BENCHSUITE_WATCH_DIR"
ENV_POLICY = "BENCHSUITE_WATCH_POLICY"
ENV_EVERY = "BENCHSUITE_WATCH_EVERY"
ENV_LOG = "BENCHSUITE_WATCH_LOG"
PREFIX = "[benchsuite watch]"

UNCHANGED = "unchanged"          # a trainable LoRA weight that has not moved after two optimizer steps
FROZEN_ADAPTER = "frozen-adapter"  # LoRA weights present, none trainable, while something trains
_SETTLE_SCANS = 3                # scans before "never changed" is judged: two optimizer steps done


class WatchProblemError(RuntimeError):
    """Raised inside the watched script under --policy raise."""


class _PostImport(importlib.abc.MetaPathFinder):
    """Calls a function right after a named module has executed."""

    def __init__(self, callbacks: dict):
        self.callbacks = callbacks

    def find_spec(self, name, path=None, target=None):
        if name not in self.callbacks:
            return None
        spec = _find_other(self, name, path)
        if spec is None or spec.loader is None:
            return spec
        loader, callback = spec.loader, self.callbacks.pop(name)
        original = loader.exec_module

        def exec_module(module):
            original(module)
            try:
                callback(module)
            except Exception as exc:  # never break the import
                sys.stderr.write(f"{PREFIX} could not attach to {name}: {exc!r}\n")
        loader.exec_module = exec_module
        return spec


def _find_other(finder, name, path):
    for f in sys.meta_path:
        if f is finder or not hasattr(f, "find_spec"):
            continue
        spec = f.find_spec(name, path)
        if spec is not None:
            return spec
    return None


class Watcher:
    def __init__(self):
        self.dir = os.environ.get(ENV_DIR)
        self.policy = os.environ.get(ENV_POLICY, "warn")
        self.every = max(1, int(os.environ.get(ENV_EVERY, "1") or 1))
        self.rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.log_path = _rank_path(os.environ.get(ENV_LOG), self.rank, self.world)
        self.lock = threading.Lock()
        self.scans = 0
        self.scan_seconds = 0.0
        self.first_scan = None
        self.last_scan = None
        self.problems: dict[str, dict] = {}   # kind -> {"first_step", "names"}
        self.seen: set[tuple[str, str]] = set()
        self.trainer_params: set[int] = set()
        self.trainers = 0
        self.optimizer_steps: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.fingerprints: dict[str, tuple] = {}
        self.changed: set[str] = set()
        self.unchanged_reported = False
        self._log = None

    # -- scanning
    def scan(self, named: list, step: int, source: str, root=None) -> None:
        from benchsuite.gradscan import scan, scan_tensors
        t0 = time.perf_counter()
        report = scan(named, step=step)
        new: list[tuple[str, list[str]]] = []
        for p in report.problems:
            fresh = [n for n in p.names if (p.kind, n) not in self.seen]
            if fresh:
                new.append((p.kind, fresh))
        # Adapters that never move: fingerprints of the LoRA weights' values across scans.
        lora = [(n, t) for n, t in named if "lora_" in n]
        if lora:
            values = scan_tensors([(n, t.detach()) for n, t in lora])
            for rec in values:
                fp = (rec.zero, rec.sumsq, rec.absmax)
                old = self.fingerprints.setdefault(rec.name, fp)
                if old != fp:
                    self.changed.add(rec.name)
            if self.scans + 1 >= _SETTLE_SCANS and not self.unchanged_reported:
                self.unchanged_reported = True
                stuck = [n for n, _ in lora if n not in self.changed]
                if stuck:
                    new.append((UNCHANGED, stuck))
        if root is not None and self.scans == 0:
            frozen = _frozen_adapter(root)
            if frozen:
                new.append((FROZEN_ADAPTER, frozen))
        elapsed = time.perf_counter() - t0
        with self.lock:
            self.scans += 1
            self.scan_seconds += elapsed
            now = time.time()
            self.first_scan = self.first_scan or now
            self.last_scan = now
            for kind, names in new:
                self.seen.update((kind, n) for n in names)
                entry = self.problems.setdefault(kind, {"first_step": step, "names": []})
                entry["names"] += names
        self._write_log(report, step, source, elapsed, new)
        if new:
            for kind, names in new:
                shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
                sys.stderr.write(f"{PREFIX} rank {self.rank} step {step}: {_WHAT[kind]} in {len(names)} "
                                 f"parameter(s): {shown}\n")
            sys.stderr.flush()
            self.save()
            if self.policy == "raise":
                kind, names = new[0]
                raise WatchProblemError(f"{PREFIX} stopping at step {step} (--policy raise): {_WHAT[kind]} in "
                                        f"{len(names)} parameter(s), first {names[0]}")

    def _write_log(self, report, step, source, elapsed, new) -> None:
        if not self.log_path:
            return
        if self._log is None:
            self._log = open(self.log_path, "a", encoding="utf-8")
        from benchsuite.gradscan.callback import log_line
        line = {**log_line(report), "rank": self.rank, "pid": os.getpid(), "source": source,
                "scan_seconds": round(elapsed, 6), "new_problems": [{"kind": k, "names": v} for k, v in new]}
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()

    # -- hooks
    def optimizer_pre_step(self, optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"] if getattr(p, "requires_grad", False)]
        if not params or id(params[0]) in self.trainer_params:
            return None  # a Trainer's optimizer: its callback scanned already
        key = id(optimizer)
        step = self.optimizer_steps.get(key, 0)
        self.optimizer_steps[key] = step + 1
        if step % self.every:
            return None
        named, root = self._named(params)
        self.scan(named, step, "optimizer", root)
        return None

    def trainer_pre_step(self, model, step: int) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.trainer_params.update(id(p) for _, p in named)
        if step % self.every:
            return
        self.scan(named, step, "trainer", model)

    def _named(self, params):
        if any(id(p) not in self.names for p in params):
            self._index_modules()
        named = [(self.names.get(id(p), f"param{i}"), p) for i, p in enumerate(params)]
        return named, self._root_of(params[0])

    def _index_modules(self) -> None:
        """Names for the optimizer's tensors, from the modules that own them (found once, by gc)."""
        import gc
        import warnings

        import torch
        with warnings.catch_warnings():  # isinstance on some lazy objects warns about deprecations
            warnings.simplefilter("ignore")
            modules = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
        children = {id(c) for m in modules for c in m.children()}
        roots = [m for m in modules if id(m) not in children]
        roots.sort(key=lambda m: -sum(1 for _ in m.parameters()))
        self._roots = roots
        for r in roots:
            for n, p in r.named_parameters():
                self.names.setdefault(id(p), n)

    def _root_of(self, param):
        for r in getattr(self, "_roots", []):
            if any(p is param for p in r.parameters()):
                return r
        return None

    # -- output
    def summary(self) -> dict:
        span = (self.last_scan - self.first_scan) if self.scans > 1 else None
        return {"rank": self.rank, "world_size": self.world, "pid": os.getpid(), "argv": sys.argv,
                "scans": self.scans, "scan_seconds": self.scan_seconds,
                "scan_ms_per_step": 1e3 * self.scan_seconds / self.scans if self.scans else None,
                "overhead_fraction": (self.scan_seconds / span) if span else None,
                "trainers": self.trainers, "optimizers": len(self.optimizer_steps),
                "problems": [{"kind": k, "first_step": v["first_step"], "names": v["names"]}
                             for k, v in self.problems.items()],
                "log": self.log_path}

    def save(self) -> None:
        if not self.dir or (self.scans == 0 and not self.trainers):
            return
        path = os.path.join(self.dir, f"rank{self.rank}-{os.getpid()}.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.summary(), f)
        os.replace(tmp, path)


_WHAT = {"no-gradient": "no gradient", "non-finite": "non-finite gradient values",
         "all-zero": "all-zero gradient", UNCHANGED: "trainable adapter weights that never changed",
         FROZEN_ADAPTER: "LoRA weights loaded frozen (requires_grad=False; PeftModel.from_pretrained "
                         "without is_trainable=True?)"}


def _frozen_adapter(root) -> list[str]:
    lora = [(n, p) for n, p in root.named_parameters() if "lora_" in n]
    if lora and not any(p.requires_grad for _, p in lora):
        return [n for n, _ in lora]
    return []


def _rank_path(path: str | None, rank: int, world: int) -> str | None:
    if not path:
        return None
    if world <= 1:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.rank{rank}{ext or '.jsonl'}"


_watcher: Watcher | None = None


def _attach_torch(module) -> None:
    module.register_optimizer_step_pre_hook(lambda opt, args, kwargs: _watcher.optimizer_pre_step(opt, args, kwargs))


def _attach_transformers(module) -> None:
    from transformers import TrainerCallback

    class WatchCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                _watcher.trainer_params.update(id(p) for p in model.parameters() if p.requires_grad)

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if model is not None:
                _watcher.trainer_pre_step(model, state.global_step)

    original = module.Trainer.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not any(isinstance(cb, WatchCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(WatchCallback())
            _watcher.trainers += 1

    module.Trainer.__init__ = __init__


def install() -> None:
    global _watcher
    if _watcher is not None or not os.environ.get(ENV_DIR):
        return
    _watcher = Watcher()
    hooks = {"torch.optim.optimizer": _attach_torch, "transformers.trainer": _attach_transformers}
    for name in list(hooks):
        if name in sys.modules:  # already imported (unlikely this early)
            hooks.pop(name)(sys.modules[name])
    if hooks:
        sys.meta_path.insert(0, _PostImport(hooks))
    atexit.register(_watcher.save)
