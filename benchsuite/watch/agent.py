"""The watcher inside the watched process.

Nothing heavy happens at start-up: post-import hooks wait for torch.optim.optimizer (then a global
optimizer step pre-hook is registered: every torch optimizer of every loop is covered, and the hook
runs only for steps that really happen: a GradScaler that skips a step never calls it) and for
transformers.trainer (then every Trainer, subclasses included, gets a callback that tells the watcher
which model and step counter belong to its optimizer). Configuration comes from environment variables
set by `benchsuite watch`.

With --signature PATH the pre-hook also writes, once, at the run's N-th optimizer step, the signature of
every trainable parameter's gradient (watch/signatures.py), for `benchsuite compare-grads`.

The watcher must never harm the run: any failure of its own (an unwritable log, a scan that raises)
is reported once on stderr and the watcher stands down; only `--policy raise` stops the script, and
only for a confirmed finding.
"""
from __future__ import annotations

import atexit
import importlib.abc
import json
import os
import sys
import tempfile
import threading
import time
import weakref

from ..gradscan import verdicts as V
from .env import (  # noqa: F401
    ENV_COMMAND,
    ENV_CONFIRM,
    ENV_DIR,
    ENV_EVERY,
    ENV_JSON,
    ENV_LOG,
    ENV_POLICY,
    ENV_REPLICA_EVERY,
    ENV_SIGNATURE,
    ENV_SIGNATURE_STEP,
    PREFIX,
)


class WatchProblemError(RuntimeError):
    """Raised inside the watched script under --policy raise, for a confirmed finding."""


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


def _int_env(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


class _Opt:
    """What the watcher keeps per optimizer."""

    def __init__(self, optimizer):
        self.ref = weakref.ref(optimizer)
        self.count = 0
        self.trainer = None          # (model, state) of the Trainer that owns it
        self.root = None             # the module whose parameters it steps
        self.last_time = None
        self.step_seconds: list[float] = []


class Watcher:
    def __init__(self):
        self.dir = os.environ.get(ENV_DIR)
        self.policy = os.environ.get(ENV_POLICY, "warn")
        self.every = _int_env(ENV_EVERY, 1)
        self.replica_every = _int_env(ENV_REPLICA_EVERY, 10)
        self.rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.log_path = _rank_path(os.environ.get(ENV_LOG), self.rank, self.world)
        # --signature: the gradients' signatures at one optimizer step, written once (watch/signatures.py)
        self.sig_path = _rank_path(os.environ.get(ENV_SIGNATURE), self.rank, self.world, default_ext=".json")
        self.sig_step = _int_env(ENV_SIGNATURE_STEP, 1)
        self.signature: dict | None = None   # {"path", "step", ...} once written, {"error"} when it could not be
        self._sig_counts: dict[int, int] = {}
        self.trainer_args: dict[int, object] = {}  # id(torch optimizer) -> the Trainer's TrainingArguments
        self.tracker = V.Tracker(confirm=_int_env(ENV_CONFIRM, 3))
        self.lock = threading.Lock()
        self.torch = False
        self.scans = 0
        self.scan_seconds: list[float] = []
        self.first_scan_seconds = None
        self.steps = 0
        self.first_step = None
        self.trainers = 0
        self.opts: dict[int, _Opt] = {}
        self.trainer_opts: dict[int, tuple] = {}   # id(torch optimizer) -> (model, state)
        self.coverage: dict = {}
        self.error: str | None = None
        self.notes: list[str] = []
        self.disabled = False
        self._log = None
        self._log_failed = False
        self._names: dict[int, str] = {}
        self._roots: list = []
        self._weak: dict[str, weakref.ref] = {}
        self._groups = (None, None)
        self._root_params: dict = {}
        self._replica = None
        self._finished = False
        self.save()

    # -- the hook
    def optimizer_pre_step(self, optimizer) -> None:
        if self.sig_path and self.signature is None:
            self._signature(optimizer)
        if self.disabled:
            return
        try:
            self._step(optimizer)
        except WatchProblemError:
            raise
        except Exception as exc:  # the watcher's own failure must not stop the run
            self._fail(f"the scan failed ({type(exc).__name__}: {exc})")

    def _signature(self, optimizer) -> None:
        """--signature: at the run's N-th optimizer step (the Trainer's step number where there is one), write
        the signature of every trainable parameter's gradient. Any failure is said once; the run goes on."""
        try:
            tr = self.trainer_opts.get(id(optimizer))
            if tr is not None:
                step = tr[1].global_step + 1
            else:
                step = self._sig_counts[id(optimizer)] = self._sig_counts.get(id(optimizer), 0) + 1
            if step < self.sig_step:
                return
            from .signatures import document, write
            group_params = [p for g in optimizer.param_groups for p in g["params"]]
            root = tr[0] if tr is not None else self._root_of(group_params)
            pairs = [(n, p) for n, p in root.named_parameters() if p.requires_grad] if root is not None else []
            known = {id(p) for _, p in pairs}
            pairs += [(self._names.get(id(p), f"param{i}"), p) for i, p in enumerate(group_params)
                      if p.requires_grad and id(p) not in known]
            try:
                command = json.loads(os.environ.get(ENV_COMMAND) or "null")
            except ValueError:
                command = None
            doc = document(pairs, step=step, rank=self.rank, world_size=self.world,
                           source="trainer" if tr is not None else "optimizer", optimizer=type(optimizer).__name__,
                           command=command, argv=sys.argv, versions=_versions(),
                           trainer=self.trainer_args.get(id(optimizer)))
            write(self.sig_path, doc)
            self.signature = {"path": self.sig_path, "step": step, "parameters": len(doc["signatures"]),
                              "none": sum(1 for d in doc["signatures"].values() if d["none"])}
        except Exception as exc:  # never harms the run
            self.signature = {"error": f"{type(exc).__name__}: {exc}", "path": self.sig_path}
            self.notes.append(f"gradient signatures not written to {self.sig_path}: {type(exc).__name__}: {exc}")
            sys.stderr.write(f"{PREFIX} cannot write the gradient signatures {self.sig_path} "
                             f"({type(exc).__name__}: {exc}); the run goes on\n")
        self._safe_save()

    def _fail(self, what: str) -> None:
        self.disabled = True
        self.notes.append(what + "; watching stopped, the run goes on")
        sys.stderr.write(f"{PREFIX} {what}; watching stopped, the run goes on\n")
        self._safe_save()

    def _step(self, optimizer) -> None:
        now = time.perf_counter()
        o = self.opts.get(id(optimizer))
        if o is None or o.ref() is not optimizer:
            o = self.opts[id(optimizer)] = _Opt(optimizer)
            o.trainer = self.trainer_opts.get(id(optimizer))
        if o.last_time is not None:
            o.step_seconds.append(now - o.last_time)
        o.last_time = now
        o.count += 1
        self.steps += 1
        step = o.trainer[1].global_step + 1 if o.trainer is not None else o.count
        self.first_step = self.first_step if self.first_step is not None else step
        if (o.count - 1) % self.every:
            return
        t0 = time.perf_counter()
        new = self._scan(optimizer, o, step)
        elapsed = time.perf_counter() - t0
        with self.lock:
            if self.first_scan_seconds is None:
                self.first_scan_seconds = elapsed   # one-time costs (indexing, first allocations): kept apart
            else:
                self.scan_seconds.append(elapsed)
        o.last_time += time.perf_counter() - t0  # the step time excludes the scan
        if new or self.scans % 20 == 1:
            self._safe_save()
        if new:
            self._announce(step, new)

    def _scan(self, optimizer, o: _Opt, step: int) -> list:
        from benchsuite.gradscan._scan import launch, mark_expected_zero
        from benchsuite.gradscan._zero import factor_groups

        group_params = [p for g in optimizer.param_groups for p in g["params"]]
        if o.trainer is not None:
            root = o.trainer[0]
        else:
            if o.root is None:
                o.root = self._root_of(group_params)
            root = o.root
        # The optimizer's own trainable parameters are judged at its steps (another optimizer's parameters
        # are not, e.g. a GAN's generator at the critic's steps); the model's other trainable parameters only
        # count for coverage.
        model_trainable = self._model_trainable(root, group_params) if root is not None else []
        names = {id(p): n for n, p in model_trainable}
        named = [(names.get(id(p)) or self._names.get(id(p), f"param{i}"), p)
                 for i, p in enumerate(group_params) if p.requires_grad]
        named = list({id(p): (n, p) for n, p in named}.values())
        for n, p in named:
            if n not in self._weak:
                self._weak[n] = weakref.ref(p)
        lrs = V.group_lrs(optimizer, {id(p): n for n, p in named})
        in_groups = {id(p) for p in group_params}
        report = launch(named, step=step).finish()
        explained = set()
        if root is not None and any(r.all_zero for r in report.records):
            explained = mark_expected_zero(report, named, root, bias_pairs=self._bias_pairs(root),
                                           groups=self._factor_groups(root, len(named), factor_groups))

        self.tracker.observe(step, report.records, lrs, explained, self._fingerprint)
        self.scans += 1
        # Coverage: trainable parameters of the model that no optimizer seen so far steps.
        key = id(root) if root is not None else id(optimizer)
        cov = self.coverage.setdefault(key, {"ids": set(), "steps": 0, "uncovered": [], "current": []})
        cov["ids"] |= in_groups
        cov["steps"] += 1
        uncovered = [n for n, p in model_trainable if id(p) not in cov["ids"]]
        # Another optimizer may still take them (a GAN's generator steps after 5 critic steps): confirmed
        # after as many steps as a lost gradient needs, or at the end of the run.
        cov["current"] = uncovered
        cov["uncovered"] = uncovered if cov["steps"] >= self.tracker.lost else []
        self.tracker.note(V.NO_OPTIMIZER, [n for c in self.coverage.values() for n in c["uncovered"]], step)
        if self.tracker.scans == 1 or cov["steps"] <= 2:
            self._structural(root, model_trainable, step)
        self._replicas(named, step)
        new = self.tracker.evaluate(step)
        counts = {"scanned": len(report.records), "trainable": len(model_trainable) if root is not None else len(named),
                  "in_optimizers": (len(model_trainable) - len(uncovered)) if root is not None else len(named)}
        self._write_log(report, step, o, counts, new)
        self.last_counts = counts
        return new

    def _fingerprint(self, names: list[str]) -> dict[str, tuple]:
        """Exact value checksums: the sum of each tensor's bit patterns, so that an update that changes a
        single bit is seen (a float sum of squares misses updates below its own rounding)."""
        live = [(n, self._weak[n]()) for n in names if n in self._weak]
        return V.checksums([(n, t) for n, t in live if t is not None])

    def _model_trainable(self, root, group_params) -> list:
        """The model's trainable (name, parameter) pairs. Its parameter list is read once (refreshed when
        the optimizer holds a tensor it does not know, and every 100 scans); requires_grad every scan."""
        cached = self._root_params.get(id(root))
        if cached is None or cached[0] is not root or self.scans - cached[2] >= 100 or \
                any(id(p) not in cached[3] for p in group_params):
            pairs = list(root.named_parameters())
            cached = (root, pairs, self.scans, {id(p) for _, p in pairs}, None)
            self._root_params[id(root)] = cached
        return [(n, p) for n, p in cached[1] if p.requires_grad]

    def _bias_pairs(self, root) -> dict:
        from benchsuite.gradscan._zero import bias_weight_pairs
        cached = self._root_params.get(id(root))
        if cached is None:
            return bias_weight_pairs(root)
        if cached[4] is None:
            cached = cached[:4] + (bias_weight_pairs(root),)
            self._root_params[id(root)] = cached
        return cached[4]

    def _factor_groups(self, root, n, build):
        key, groups = self._groups
        if key != (id(root), n):
            groups = build(root)
            self._groups = ((id(root), n), groups)
        return groups

    def _structural(self, root, named, step) -> None:
        if root is None:
            return
        if not named:
            self.tracker.note(V.ZERO_TRAINABLE, ["(every parameter)"], step)
        self.tracker.note(V.FROZEN_ADAPTER, _frozen_adapter(root) if named else [], step)

    def _replicas(self, named, step) -> None:
        """Under torch.distributed, compare cheap per-parameter fingerprints across ranks every K scans."""
        if self.world <= 1 or self._replica is False:
            return
        if not (self.tracker.scans == 2 or (self.tracker.scans > 2 and self.tracker.scans % self.replica_every == 0)):
            return
        import torch
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
            return
        if self._replica is None:
            if any(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") or type(p).__name__ == "FlatParameter"
                   for _, p in named):
                self._replica = False  # sharded (FSDP, DeepSpeed, tensor parallel): ranks hold different shards
                return
            self._replica = dist.new_group(backend="gloo")
        import datetime
        import zlib
        sums = V.checksums(named)  # exact: replicas under DDP hold bit-identical weights
        shape = zlib.crc32(";".join(f"{n}:{tuple(p.shape)}" for n, p in named).encode())
        x = torch.tensor([shape] + [sums[n][0] for n, _ in named], dtype=torch.int64)
        x = torch.cat([x, ~x])  # one MAX reduction gives the maximum and (through ~) the minimum
        work = dist.all_reduce(x, op=dist.ReduceOp.MAX, group=self._replica, async_op=True)
        try:
            work.wait(timeout=datetime.timedelta(seconds=120))
        except Exception as exc:
            self._replica = False
            self.notes.append(f"replica check stopped: {exc}")
            return
        k = len(named) + 1
        hi, lo = x[:k], ~x[k:]
        if hi[0] != lo[0]:
            self._replica = False  # different models per rank (pipeline stages...): not replicas
            return
        differ = [n for (n, _), h, l in zip(named, hi[1:].tolist(), lo[1:].tolist()) if h != l]
        if differ:
            self.tracker.note(V.REPLICAS, differ, step)

    # -- names for optimizers outside a Trainer
    def _root_of(self, params):
        self._index_modules()
        ids = {id(p) for p in params}
        best, hits = None, 0
        for r in self._roots:
            n = sum(1 for p in r.parameters() if id(p) in ids)
            if n > hits:
                best, hits = r, n
        if best is not None:
            for n, p in best.named_parameters():
                self._names[id(p)] = n
        return best

    def _index_modules(self) -> None:
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

    # -- output
    def _announce(self, step, new) -> None:
        from .names import compact
        if self.policy != "record":
            for kind, names in new:
                sys.stderr.write(f"{PREFIX} rank {self.rank} step {step}: {V.TITLES[kind]} in {len(names)} "
                                 f"parameter(s): {compact(names, 2)}\n")
            sys.stderr.flush()
        if self.policy == "raise":
            kind, names = new[0]
            outputs = [x for x in (os.environ.get(ENV_JSON) and "the summary (--json)",
                                   self.log_path and "the step log (--log)") if x]
            where = (" and ".join(outputs) + " list every name") if outputs else \
                "run with --json PATH or --log PATH for every name"
            cause = V.cause(kind, {self.tracker.params[n].dtype for n in names if n in self.tracker.params})
            raise WatchProblemError(f"{PREFIX} stopping at step {step} (--policy raise): {V.TITLES[kind]} in "
                                    f"{len(names)} parameter(s): {compact(names, 2)}; {where}. Likely cause: {cause}")

    def _write_log(self, report, step, o, counts, new) -> None:
        if not self.log_path or self._log_failed:
            return
        try:
            if self._log is None:
                os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
                self._log = open(self.log_path, "a", encoding="utf-8")
            from benchsuite.gradscan._records import log_line
            line = {**log_line(report), "rank": self.rank, "pid": os.getpid(),
                    "source": "trainer" if o.trainer is not None else "optimizer", **counts,
                    "scan_seconds": round(self.scan_seconds[-1], 6) if self.scan_seconds else None,
                    "confirmed": [{"kind": k, "names": v} for k, v in new]}
            self._log.write(json.dumps(line) + "\n")
            self._log.flush()
        except Exception as exc:
            self._log_failed = True
            self.notes.append(f"step log not written: {exc}")
            sys.stderr.write(f"{PREFIX} cannot write the step log {self.log_path}: {exc}; the run goes on\n")

    def after_training(self) -> None:
        if self.disabled or not self.scans:
            return
        try:
            self.tracker.finish(self._fingerprint)
        except Exception as exc:
            self.notes.append(f"check after training failed: {exc}")
        self._safe_save()

    def finish(self) -> None:
        """After the last step: compare the last updates, take the final verdicts, save."""
        if self._finished:
            return
        self._finished = True
        if self.sig_path and self.signature is None and self.steps:
            self.signature = {"error": f"the run ended after {self.steps} optimizer step(s), before step "
                                       f"{self.sig_step} (--signature-step)", "path": self.sig_path}
            sys.stderr.write(f"{PREFIX} no gradient signatures written: {self.signature['error']}\n")
        if not self.disabled and self.scans:
            try:
                self.tracker.finish(self._fingerprint)
                self.tracker.note(V.NO_OPTIMIZER, [n for c in self.coverage.values() for n in c["current"]],
                                  self.tracker.last_step)
                self.tracker.evaluate("end", final=True)
            except Exception as exc:
                self.notes.append(f"final check failed: {exc}")
        self._safe_save()

    def summary(self) -> dict:
        med_scan = V.median(self.scan_seconds)
        steps = [s for o in self.opts.values() for s in o.step_seconds]
        med_step = V.median(steps)
        return {"rank": self.rank, "world_size": self.world, "pid": os.getpid(), "argv": sys.argv,
                "torch": self.torch, "trainers": self.trainers, "optimizers": len(self.opts),
                "optimizer_steps": self.steps, "first_step": self.first_step, "last_step": self.tracker.last_step,
                "scans": self.scans, "every": self.every, "confirm": self.tracker.confirm,
                "params": getattr(self, "last_counts", None),
                "overhead": {"first_scan_ms": _ms(self.first_scan_seconds), "median_scan_ms": _ms(med_scan),
                             "median_step_ms": _ms(med_step), "scans_timed": len(self.scan_seconds),
                             "fraction_of_step": (med_scan / med_step) if (med_scan and med_step) else None},
                "findings": self.tracker.report(), "zero_gradient_steps": self.tracker.zero_steps,
                "error": self.error, "notes": self.notes, "log": self.log_path, "finished": self._finished,
                "signature": self.signature,
                # the libraries' versions, for the catalogue cases watch names (benchsuite.doctor, issue 15)
                "versions": _versions() if self.steps else None}

    def _safe_save(self) -> None:
        try:
            self.save()
        except Exception as exc:  # the run goes on; say it once, or the summary would silently be stale
            if not getattr(self, "_save_failed", False):
                self._save_failed = True
                sys.stderr.write(f"{PREFIX} cannot save the watcher's state ({type(exc).__name__}: {exc}); "
                                 "the summary may be incomplete, the run goes on\n")

    def save(self) -> None:
        if not self.dir:
            return
        path = os.path.join(self.dir, f"proc-{os.getpid()}.json")
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".proc-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.summary(), f)
        os.replace(tmp, path)


_VERSIONS: dict = {}


def _versions() -> dict:
    """Installed versions of the packages catalogue cases declare, for summary()["versions"] (read once,
    after the first step; benchsuite.doctor matches findings with cases by them, issue 15)."""
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


def _frozen_adapter(root) -> list[str]:
    """Adapter weights (parameters of PEFT layers other than the wrapped base layer), none trainable."""
    mod = sys.modules.get("peft.tuners.tuners_utils")
    tuner = getattr(mod, "BaseTunerLayer", None)
    if tuner is None:
        return []
    names = []
    for prefix, m in root.named_modules():
        if isinstance(m, tuner):
            for n, p in m.named_parameters():
                if not n.startswith("base_layer."):
                    if p.requires_grad:
                        return []
                    names.append(f"{prefix}.{n}" if prefix else n)
    return names


def _rank_path(path: str | None, rank: int, world: int, default_ext: str = ".jsonl") -> str | None:
    if not path:
        return None
    if world <= 1:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.rank{rank}{ext or default_ext}"


_watcher: Watcher | None = None


def _attach_torch(module) -> None:
    _watcher.torch = True
    _watcher._safe_save()
    module.register_optimizer_step_pre_hook(lambda opt, args, kwargs: _watcher.optimizer_pre_step(opt))


def _attach_transformers(module) -> None:
    from transformers import TrainerCallback

    class WatchCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            if model is not None and optimizer is not None:
                inner = getattr(optimizer, "optimizer", optimizer)
                _watcher.trainer_opts[id(inner)] = (model, state)
                _watcher.trainer_args[id(inner)] = args
                o = _watcher.opts.get(id(inner))
                if o is not None:
                    o.trainer = (model, state)

        def on_train_end(self, args, state, control, **kwargs):
            # Did the last update move anything? (The final verdicts wait for the process to end: a script
            # may train again.)
            _watcher.after_training()

    original = module.Trainer.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        try:
            if not any(isinstance(cb, WatchCallback) for cb in self.callback_handler.callbacks):
                self.add_callback(WatchCallback())
                _watcher.trainers += 1
        except Exception as exc:
            sys.stderr.write(f"{PREFIX} could not attach to a Trainer: {exc!r}\n")

    module.Trainer.__init__ = __init__


def _excepthook(previous):
    def hook(exc_type, exc, tb):
        try:
            if _watcher is not None and not issubclass(exc_type, KeyboardInterrupt):
                text = str(exc).strip().splitlines()
                _watcher.error = f"{exc_type.__name__}: {text[0] if text else ''}"[:400]
                _watcher._safe_save()
        except Exception:
            pass
        previous(exc_type, exc, tb)
    return hook


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
    sys.excepthook = _excepthook(sys.excepthook)
    atexit.register(_watcher.finish)
