"""Tiny models built from configs (never downloaded), saved to a folder when a case needs a checkpoint."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

CHATGLM_DIR = Path(__file__).parent / "remote" / "chatglm"
CHATGLM_FILES = ("configuration_chatglm.py", "modeling_chatglm.py")


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig
    cfg: dict[str, Any] = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def tiny_llama(task: str = "causal", seed: int = 0, **overrides):
    """A 2-layer Llama with random weights: task "causal" or "seq_cls" (num_labels from overrides, default 2)."""
    if task not in ("causal", "seq_cls"):
        raise ValueError(f"tiny_llama(task=...) is 'causal' (LlamaForCausalLM) or 'seq_cls' "
                         f"(LlamaForSequenceClassification), not {task!r}")
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification
    torch.manual_seed(seed)
    cfg = tiny_llama_config(**overrides)
    return (LlamaForCausalLM if task == "causal" else LlamaForSequenceClassification)(cfg)


def write_chatglm(folder: str | os.PathLike, seed: int = 0, **config) -> str:
    """Save a random ChatGLM-style checkpoint with its remote code and auto_map into ``folder``."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # the vendored remote code imports torch and transformers: lazily, as they are (`benchsuite --help` stays fast)
    from .remote.chatglm.configuration_chatglm import ChatGLMConfig
    from .remote.chatglm.modeling_chatglm import ChatGLMForConditionalGeneration
    cfg = ChatGLMConfig(**config)
    model = ChatGLMForConditionalGeneration(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    for name in CHATGLM_FILES:
        shutil.copy(CHATGLM_DIR / name, folder / name)
    cfg_path = folder / "config.json"
    data = json.loads(cfg_path.read_text())
    data["auto_map"] = {
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification",
    }
    data["architectures"] = ["ChatGLMModel"]
    data["model_type"] = "chatglm"
    cfg_path.write_text(json.dumps(data, indent=2))
    return str(folder)
