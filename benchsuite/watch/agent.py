"""The watcher inside the watched process.

Nothing heavy happens at start-up (watch/hooks.py installs post-import hooks). Every torch optimizer step that
really happens is scanned in a global step pre-hook; each optimizer belongs to one model (watch/model.py): a
Trainer's training, or the module that owns its tensors, and every verdict is that model's. The loss each
backward() propagates and the batches' labels (watch/loss.py) and the learning rate with its schedule
(watch/lr.py) are judged per model too.

With --signature PATH the pre-hook also writes, once, at the run's N-th optimizer step, the signature of
every trainable parameter's gradient (watch/signatures.py), for `benchsuite compare-grads`.

The watcher must never harm the run: any failure of its own (an unwritable log, a scan that raises)
is reported once on stderr and the watcher stands down; only `--policy raise` stops the script, and
only for a confirmed finding.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import weakref

from ..gradscan import verdicts as V
from . import kinds as K
from . import output
from . import structure as S
from .env import (
    ENV_COMMAND,
    ENV_CONFIRM,
    ENV_DIR,
    ENV_EVERY,
    ENV_LOG,
    ENV_POLICY,
    ENV_REPLICA_EVERY,
    ENV_RL,
    ENV_SIGNATURE,
    ENV_SIGNATURE_STEP,
    PREFIX,
)
from .loss import LossFeed
from .model import RL_TRAINERS, ModelState


class WatchProblemError(RuntimeError):
    """Raised inside the watched script under --policy raise, for a confirmed finding."""


def _int_env(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


class _Opt:
    """What the watcher keeps per optimizer: its step count, timing and the model it steps."""

    def __init__(self, optimizer, model: ModelState):
        self.ref = weakref.ref(optimizer)
        self.count = 0
        self.model = model
        self.last_time: float | None = None
        self.step_seconds: list[float] = []


class Watcher:
    def __init__(self):
        self.dir = os.environ.get(ENV_DIR)
        self.policy = os.environ.get(ENV_POLICY, "warn")
        self.every = _int_env(ENV_EVERY, 1)
        self.confirm = _int_env(ENV_CONFIRM, 3)
        self.rl = os.environ.get(ENV_RL) == "1"
        self.rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.log_path = output.rank_path(os.environ.get(ENV_LOG), self.rank, self.world)
        self.sig_path = output.rank_path(os.environ.get(ENV_SIGNATURE), self.rank, self.world, default_ext=".json")
        self.sig_step = _int_env(ENV_SIGNATURE_STEP, 1)
        self.signature: dict | None = None    # the first signature (or why there is none): the summary's "signature"
        self.signatures: list[dict] = []      # one per optimizer that reached --signature-step, in order
        self._sig_counts: dict[int, tuple] = {}  # id(optimizer) -> (weakref to it, its steps so far; None: signed)
        self.lock = threading.Lock()
        self.torch = False
        self.feed = LossFeed()
        self.replicas = S.Replicas(self.world, _int_env(ENV_REPLICA_EVERY, 10))
        self.scans = 0
        self.scan_seconds: list[float] = []
        self.first_scan_seconds: float | None = None
        self.steps = 0
        self.first_step: int | None = None
        self.trainers = 0
        self.opts: dict[int, _Opt] = {}
        self.models: list[ModelState] = []
        self.trainer_opts: dict[int, ModelState] = {}   # id(torch optimizer) -> its Trainer's model
        self.trainer_args: dict[int, object] = {}
        self._by_root: dict[int, ModelState] = {}
        self._names: dict[int, str] = {}
        self.error: str | None = None
        self.notes: list[str] = []
        self.disabled = False
        self.log = output.StepLog(self.log_path, self.notes)
        self.stopped: dict | None = None   # the first stop under --policy raise (uncaught: it ended the process)
        self._finished = False
        self.save()

    # -- models
    def trainer_began(self, model, optimizer, state, args, trainer_class: str, order: int) -> None:
        """A Trainer's train() starts: its optimizer steps a model of its own from now on."""
        runs = sum(1 for m in self.models if m.trainer_class == trainer_class and m.label.startswith(
            f"{trainer_class} #{order}"))
        label = f"{trainer_class} #{order}" + (f", train() {runs + 1}" if runs else "")
        m = self._new_model(label, root=model, rl=self.rl or bool(RL_TRAINERS.search(trainer_class)))
        m.trainer, m.trainer_class = (model, state), trainer_class
        m.total_steps = getattr(state, "max_steps", None) or None
        m.base_lr = getattr(args, "learning_rate", None)
        self.trainer_opts[id(optimizer)] = m
        self.trainer_args[id(optimizer)] = args
        o = self.opts.get(id(optimizer))
        if o is not None and o.ref() is optimizer:
            o.model, o.count = m, 0
        self._watch_labels(m, model)

    def _new_model(self, label: str, root=None, rl: bool = False) -> ModelState:
        m = ModelState(len(self.models) + 1, label, root=root, rl=rl, confirm=self.confirm)
        self.models.append(m)
        return m

    def _model_of(self, optimizer) -> ModelState:
        m = self.trainer_opts.get(id(optimizer))
        if m is not None and not m.ended:
            return m
        params = [p for g in optimizer.param_groups for p in g["params"]]
        root = S.root_of(params, self._names)
        if root is not None:
            m = self._by_root.get(id(root))
            if m is not None and m.root is root and not m.ended:
                return m
        label = f"{type(optimizer).__name__} optimizer" + (f" of {type(root).__name__}" if root is not None else "")
        m = self._new_model(f"{label} #{len(self.models) + 1}", root=root, rl=self.rl)
        if root is not None:
            self._by_root[id(root)] = m
            self._watch_labels(m, root)
        return m

    def _watch_labels(self, m: ModelState, module) -> None:
        feed = self.feed
        try:
            m.hook = module.register_forward_pre_hook(lambda mod, args, kwargs: feed.forward(kwargs), with_kwargs=True)
        except Exception:
            m.hook = None

    def end_model(self, m: ModelState, announce: bool = True, stop: bool = True) -> None:
        """The model's training is over: its final verdicts (the last update compared, what was never seen).
        ``stop=False`` at the process's exit: there is nothing left to stop, so a finding is announced, not
        raised (`benchsuite watch` turns it into exit code 3 under --policy raise)."""
        if m.ended or not m.tracker.scans:
            m.ended = True
            return
        m.ended = True
        if m.hook is not None:
            m.hook.remove()
        if m.stopped_at is not None or (self.stopped or {}).get("uncaught"):
            # Stopped (or cut short by a stop that ended the process): nothing is judged "at the end of the run",
            # for the run did not go on (a weight that never changed had no update to make).
            # Parameters in no optimizer yet are named, not judged (another optimizer could have taken them later).
            m.not_judged = {"step": self.stopped["step"] if self.stopped else m.stopped_at,
                            "in_no_optimizer": list(m.coverage["current"])}
            self._safe_save()
            return
        m.tracker.finish(lambda names: self._fingerprint(m, names))
        m.tracker.note(V.NO_OPTIMIZER, m.coverage["current"], m.tracker.last_step)
        new = m.evaluate("end", final=True, scaler_seen=self.feed.scaler_seen)
        self._safe_save()
        if new and announce:
            self._announce(m, "end", new, stop=stop)

    # -- the hook
    def optimizer_pre_step(self, optimizer) -> None:
        try:
            if not self.disabled:
                self._step(optimizer)
        except WatchProblemError:
            raise
        except Exception as exc:  # the watcher's own failure must not stop the run
            self._fail(f"the scan failed ({type(exc).__name__}: {exc})")
        finally:  # after the scan, which names the step's model; also at a stop under --policy raise
            if self.sig_path:
                try:
                    self._signature(optimizer)
                except Exception as exc:  # never harms the run
                    self.sig_path = None
                    self.notes.append(f"gradient signatures not taken: {type(exc).__name__}: {exc}")

    def _signature(self, optimizer) -> None:
        """--signature: each optimizer's gradients at its N-th step, once (the models of a sweep each get a file)."""
        ref, count = self._sig_counts.get(id(optimizer), (None, 0))
        if ref is not None and ref() is not optimizer:  # another optimizer that had the same id
            ref, count = None, 0
        if count is None:
            return
        m = self.trainer_opts.get(id(optimizer))
        step = m.trainer[1].global_step + 1 if m is not None else count + 1
        signed = step >= self.sig_step
        self._sig_counts[id(optimizer)] = (ref or weakref.ref(optimizer), None if signed else step)
        if not signed:
            return
        o = self.opts.get(id(optimizer))
        model = o.model if o is not None and o.ref() is optimizer else m
        output.write_signature(self, optimizer, step, m.trainer[0] if m is not None else None,
                               self.trainer_args.get(id(optimizer)), json.loads(os.environ.get(ENV_COMMAND) or "null"),
                               model.label if model is not None else None)
        self._safe_save()

    def _fail(self, what: str) -> None:
        self.disabled = True
        self.notes.append(what + "; watching stopped, the run goes on")
        sys.stderr.write(f"{PREFIX} {what}; watching stopped, the run goes on\n")
        self._safe_save()

    def _step(self, optimizer) -> None:
        now = time.perf_counter()
        o = self.opts.get(id(optimizer))
        if o is None or o.ref() is not optimizer or o.model.ended:
            o = self.opts[id(optimizer)] = _Opt(optimizer, self._model_of(optimizer))
        m = o.model
        if o.last_time is not None:
            o.step_seconds.append(now - o.last_time)
        o.last_time = now
        o.count += 1
        m.steps += 1
        self.steps += 1
        step = m.trainer[1].global_step + 1 if m.trainer is not None else o.count
        self.first_step = self.first_step if self.first_step is not None else step
        m.first_step = m.first_step if m.first_step is not None else step
        loss = self.feed.take()
        if (o.count - 1) % self.every:
            m.loss.add(step, loss[0], loss[1], m.loss.grads_finite)
            return
        t0 = time.perf_counter()
        new = self._scan(optimizer, m, step, loss)
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
            self._announce(m, step, new)

    def _scan(self, optimizer, m: ModelState, step: int, loss: tuple[float | None, str | None]) -> list:
        from benchsuite.gradscan._scan import launch, mark_expected_zero

        group_params = [p for g in optimizer.param_groups for p in g["params"]]
        root = m.trainer[0] if m.trainer is not None else m.root
        # The optimizer's own trainable parameters are judged at its steps (another optimizer's parameters
        # are not, e.g. a GAN's generator at the critic's steps); the model's other trainable parameters only
        # count for coverage.
        model_trainable = S.model_trainable(m, root, group_params, self.scans) if root is not None else []
        names = {id(p): n for n, p in model_trainable}
        named = [(names.get(id(p)) or self._names.get(id(p), f"param{i}"), p)
                 for i, p in enumerate(group_params) if p.requires_grad]
        named = list({id(p): (n, p) for n, p in named}.values())
        for n, p in named:
            if n not in m.weak:
                m.weak[n] = weakref.ref(p)
        if not m.tracker.scans:
            m.loss.low_precision = {str(p.dtype).replace("torch.", "") for _, p in named}
        lrs = V.group_lrs(optimizer, {id(p): n for n, p in named})
        report = launch(named, step=step).finish()
        explained = set()
        if root is not None and any(r.all_zero for r in report.records):
            explained = mark_expected_zero(report, named, root, bias_pairs=S.bias_pairs(m, root),
                                           groups=S.factor_groups(m, root, len(named)))
        t = m.tracker
        t.observe(step, report.records, lrs, explained, lambda ns: self._fingerprint(m, ns))
        with_grad = [r for r in report.records if not r.none]
        t.count_zero_step(bool(with_grad) and all(r.all_zero for r in with_grad), step)
        m.loss.add(step, loss[0], loss[1], not any(r.nonfinite for r in with_grad))
        m.lr.observe(step, optimizer, named, m.base_lr, m.total_steps, m.steps)
        self.scans += 1
        uncovered = self._coverage(m, model_trainable, group_params)
        t.note(V.NO_OPTIMIZER, m.coverage["uncovered"], step)
        if t.scans == 1 or m.coverage["steps"] <= 2:
            self._structural(m, root, model_trainable, step)
        self.replicas.check(t, named, step, self.notes)
        new = m.evaluate(step, final=False, scaler_seen=self.feed.scaler_seen)
        counts = {"scanned": len(report.records), "trainable": len(model_trainable) if root is not None else len(named),
                  "in_optimizers": (len(model_trainable) - len(uncovered)) if root is not None else len(named)}
        self.log.write(report, step, self, m, counts, new)
        m.last_counts = counts
        return new

    def _coverage(self, m: ModelState, model_trainable, group_params) -> list:
        """Trainable parameters of the model that no optimizer seen so far steps. Another optimizer may still take
        them (a GAN's generator steps after 5 critic steps): confirmed after as many steps as a lost gradient
        needs, or at the end of the run."""
        cov = m.coverage
        cov["ids"] |= {id(p) for p in group_params}
        cov["steps"] += 1
        uncovered = [n for n, p in model_trainable if id(p) not in cov["ids"]]
        cov["current"] = uncovered
        cov["uncovered"] = uncovered if cov["steps"] >= m.tracker.lost else []
        return uncovered

    def _fingerprint(self, m: ModelState, names: list[str]) -> dict[str, tuple]:
        """Exact value checksums: the sum of each tensor's bit patterns, so that an update that changes a
        single bit is seen (a float sum of squares misses updates below its own rounding)."""
        live = [(n, m.weak[n]()) for n in names if n in m.weak]
        return V.checksums([(n, t) for n, t in live if t is not None])

    def _structural(self, m: ModelState, root, named, step) -> None:
        if root is None:
            return
        if not named:
            m.tracker.note(V.ZERO_TRAINABLE, ["(every parameter)"], step)
        m.tracker.note(V.FROZEN_ADAPTER, S.frozen_adapter(root) if named else [], step)

    # -- output
    def _announce(self, m: ModelState, step, new, stop: bool = True) -> None:
        new = sorted(new, key=lambda kn: K.ORDER.index(kn[0]) if kn[0] in K.ORDER else len(K.ORDER))
        lines = [output.finding_text(m, kind, names) for kind, names in new]
        where = f"step {step}" if step != "end" else f"the end of {m.label}'s training"
        several = len(self.models) > 1 or m.trainer is not None
        about = f" ({m.label})" if several else ""
        if self.policy != "record":
            for text in lines:
                sys.stderr.write(f"{PREFIX} rank {self.rank} {where}{about}: {text}\n")
            sys.stderr.flush()
        if self.policy == "raise" and stop:
            kind, names = new[0]
            message = output.stop_message(self, m, where, kind, names, about)
            if self.stopped is None:
                self.stopped = {"step": step, "where": where, "model": m.label, "kind": kind, "title": K.title(kind),
                                "message": message, "uncaught": False}
            if m.stopped_at is None:
                m.stopped_at = step
            self._safe_save()
            raise WatchProblemError(message)

    def finish(self) -> None:
        """At the end of the process: every model's final verdicts, then save."""
        if self._finished:
            return
        self._finished = True
        if self.sig_path and self.signature is None and self.steps:
            self.signature = {"error": f"the run ended after {self.steps} optimizer step(s), before step "
                                       f"{self.sig_step} (--signature-step)", "path": self.sig_path}
            sys.stderr.write(f"{PREFIX} no gradient signatures written: {self.signature['error']}\n")
        if not self.disabled:
            for m in self.models:
                try:
                    self.end_model(m, announce=self.policy != "record", stop=False)
                except Exception as exc:
                    self.notes.append(f"final check failed: {exc}")
        self._safe_save()

    def summary(self) -> dict:
        return output.summary(self)

    def _safe_save(self) -> None:
        try:
            self.save()
        except Exception as exc:  # the run goes on; say it once, or the summary would silently be stale
            if not getattr(self, "_save_failed", False):
                self._save_failed = True
                sys.stderr.write(f"{PREFIX} cannot save the watcher's state ({type(exc).__name__}: {exc}); "
                                 "the summary may be incomplete, the run goes on\n")

    def save(self) -> None:
        if self.dir:
            output.save(self.dir, self.summary())
