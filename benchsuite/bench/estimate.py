"""Analytic peak-memory estimate from the model config, batch, sequence length and the options.

peak = weights + trainable gradients + optimizer states + saved activations + the backward's transient
activation gradients + logits/loss buffers (+ under autocast, the half-precision copies of the linear
layers' weights, which each matmul keeps for its backward).

Activations per decoder layer and token (Llama/Qwen2/ChatGLM-style blocks, attention computed by a
fused SDPA kernel that keeps q, k, v, the output and a log-sum-exp, never the s x s scores):
  "wide" tensors, stored in the compute dtype (fp32, or fp16/bf16 under autocast):
      attention: normed input, q, k, v, rotated q and k, attention output        ~ 6h + 2kv
      MLP:       normed input, gate, up, silu(gate), silu(gate) * up             ~ h + 4i
  "norm" tensors, kept in fp32 by RMSNorm and the residual path: 2 norms x (input, output) ~ 4h
With checkpointing a layer keeps only its input (h per token, compute dtype) and, during the
backward, one layer at a time is rebuilt in full. Either way the backward of a layer holds that
layer's activation gradients for a moment: one more layer's worth. Logits and loss: five fp32
buffers of vocab per token (the logits, their float/contiguous copy, the log-softmax kept for the
backward, its gradient and the logits' gradient).
"""
from __future__ import annotations

from dataclasses import dataclass

BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    params: int            # all parameters
    trainable: int         # trainable parameters (LoRA: adapters + head if trained)
    embedding: int = 0     # input-embedding parameters (looked up, never cast by autocast)


def shape_of(model, trainable: int) -> Shape:
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.num_layers
    hidden = cfg.hidden_size
    inter = getattr(cfg, "intermediate_size", None) or cfg.ffn_hidden_size
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    vocab = getattr(cfg, "vocab_size", None) or cfg.padded_vocab_size
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return Shape(layers, hidden, inter, heads, kv, vocab, sum(p.numel() for p in model.parameters()), trainable,
                 emb.weight.numel() if emb is not None else 0)


def activation_bytes_per_layer_token(s: Shape, precision: str) -> float:
    kv = s.hidden * s.kv_heads // s.heads
    wide = 6 * s.hidden + 2 * kv + s.hidden + 4 * s.intermediate
    norm = 4 * s.hidden
    return wide * BYTES[precision] + norm * 4


def estimate(s: Shape, *, batch: int, seq: int, accumulation: int, precision: str, checkpointing: str,
             optimizer_states: int = 2) -> dict:
    micro = max(1, batch // accumulation)
    tokens = micro * seq
    weights = s.params * 4  # fp32 master weights; autocast casts per op
    grads = s.trainable * 4
    optim = s.trainable * 4 * optimizer_states  # AdamW: exp_avg and exp_avg_sq
    per_layer = activation_bytes_per_layer_token(s, precision) * tokens
    if checkpointing == "off":
        acts = per_layer * s.layers
    else:
        acts = s.layers * tokens * s.hidden * BYTES[precision] + per_layer
    transient = per_layer
    logits = tokens * s.vocab * 4 * 5
    casts = (s.params - s.embedding) * BYTES[precision] if precision != "fp32" else 0
    total = weights + grads + optim + acts + transient + logits + casts
    return {"estimated_peak_memory_bytes": int(total),
            "estimate_parts": {"weights": int(weights), "gradients": int(grads), "optimizer": int(optim),
                               "activations": int(acts), "backward_transient": int(transient),
                               "logits": int(logits), "autocast_weight_copies": int(casts)}}
