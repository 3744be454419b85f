"""How the watcher attaches to an unmodified script: post-import hooks that wait for torch and transformers.

* torch.optim.optimizer: a global optimizer step pre-hook (every torch optimizer of every loop; it runs only for
  steps that really happen: a GradScaler that skips a step never calls it).
* torch.autograd: backward() records the scalar it propagates (the loss, before any logging filter);
  torch.amp.grad_scaler: GradScaler.scale() says which loss a scaled one stands for.
* torch.optim.lr_scheduler: every LR scheduler is known by its optimizer (the schedule behind a learning rate).
* transformers.trainer: every Trainer, subclasses included, gets a callback that says which model, step counter
  and arguments belong to its optimizer, and when its training ends (its final verdicts).

Configuration comes from environment variables set by `benchsuite watch`.
"""
from __future__ import annotations

import atexit
import importlib.abc
import os
import sys

from . import lr as lr_mod
from .agent import Watcher
from .env import ENV_DIR, PREFIX

_watcher: Watcher | None = None


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


def _attach_optimizer(module) -> None:
    assert _watcher is not None
    w = _watcher
    w.torch = True
    w._safe_save()
    module.register_optimizer_step_pre_hook(lambda opt, args, kwargs: w.optimizer_pre_step(opt))


def _attach_autograd(module) -> None:
    assert _watcher is not None
    feed = _watcher.feed
    original = module.backward

    def backward(tensors, grad_tensors=None, *args, **kwargs):
        try:
            feed.backward(tensors, grad_tensors)
        except Exception:
            pass
        return original(tensors, grad_tensors, *args, **kwargs)
    backward.__wrapped__ = original  # type: ignore[attr-defined]
    module.backward = backward


def _attach_scaler(module) -> None:
    assert _watcher is not None
    feed = _watcher.feed
    cls = module.GradScaler
    original = cls.scale

    def scale(self, outputs):
        result = original(self, outputs)
        try:
            if getattr(self, "_enabled", True):
                feed.scaled_by(result, outputs)
        except Exception:
            pass
        return result
    cls.scale = scale


def _attach_schedulers(module) -> None:
    cls = getattr(module, "LRScheduler", None) or module._LRScheduler
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        try:
            lr_mod.scheduler_made(self)
        except Exception:
            pass
    cls.__init__ = __init__


def _attach_transformers(module) -> None:
    from transformers import TrainerCallback
    assert _watcher is not None
    w = _watcher

    class WatchCallback(TrainerCallback):
        def __init__(self, trainer_class: str, order: int):
            self.trainer_class, self.order = trainer_class, order

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            if model is not None and optimizer is not None:
                inner = getattr(optimizer, "optimizer", optimizer)
                w.trainer_began(model, inner, state, args, self.trainer_class, self.order)

        def on_train_end(self, args, state, control, optimizer=None, **kwargs):
            # This training is over: its final verdicts (under --policy raise, a finding stops the script here,
            # before it saves what it trained).
            inner = getattr(optimizer, "optimizer", optimizer)
            m = w.trainer_opts.get(id(inner))
            if m is not None and not w.disabled:
                w.end_model(m)

    original = module.Trainer.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        try:
            if not any(isinstance(cb, WatchCallback) for cb in self.callback_handler.callbacks):
                w.trainers += 1
                self.add_callback(WatchCallback(type(self).__name__, w.trainers))
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
    hooks = {"torch.optim.optimizer": _attach_optimizer, "torch.autograd": _attach_autograd,
             "torch.amp.grad_scaler": _attach_scaler, "torch.optim.lr_scheduler": _attach_schedulers,
             "transformers.trainer": _attach_transformers}
    for name in list(hooks):
        if name in sys.modules:  # already imported (unlikely this early)
            hooks.pop(name)(sys.modules[name])
    if hooks:
        sys.meta_path.insert(0, _PostImport(hooks))
    sys.excepthook = _excepthook(sys.excepthook)
    atexit.register(_watcher.finish)
