"""Seeing whether activation checkpointing actually recomputes."""
from __future__ import annotations

from contextlib import contextmanager

LAYER_SUFFIXES = ("DecoderLayer", "GLMBlock", "Block")


def decoder_layers(model) -> list:
    """The repeated blocks that checkpointing wraps (Llama/Qwen2 decoder layers, ChatGLM blocks, ...)."""
    return [m for m in model.modules()
            if type(m).__name__.endswith(LAYER_SUFFIXES) and type(m).__name__ != "ModuleList"]


class RecomputeCounter:
    """Counts forwards of the decoder layers' modules that run inside ``backward()``.

    Only recomputation runs a forward during the backward, so a count of zero with checkpointing on
    means nothing was dropped and nothing was saved. Works whatever wrapper transformers uses around
    the layer (the layer's own __call__ is not always re-entered; its submodules always are).
    Use ``with counter.backward(): loss.backward()``.
    """

    def __init__(self, model):
        self.calls = 0
        self._active = False
        self._handles = [sub.register_forward_pre_hook(self._count)
                         for layer in decoder_layers(model) for sub in layer.modules()]

    def _count(self, module, args):
        if self._active:
            self.calls += 1

    @contextmanager
    def backward(self):
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
