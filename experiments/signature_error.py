"""The gradient signature's error, measured against exact comparison on a model of >= 100M parameters.

    python experiments/signature_error.py --json docs/results/signature-error-cpu.json \\
        --markdown docs/results/signature-error-cpu.md

A Llama of 134M parameters (hidden 768, 12 layers, vocabulary 32000; built from its config, random
weights) takes one forward and backward per variant from the same weights on the same batch of
unequal sequence lengths (the grid's ``make_batch``): fp32 (the reference), reentrant and
non-reentrant checkpointing, accumulation 2 with the token-weighted and with the per-micro-batch-mean
loss, bf16 autocast. Every variant's gradients are compared with the reference's both exactly (float64
over both full gradients) and from signatures; the result gives, per variant, the exact and estimated
worst figures, whether the verdicts agree, and over all parameters with a non-zero difference the
distribution of estimated / exact relative error. It also times the signature pass against scan().
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from benchsuite import strictjson
from benchsuite.bench.worker import make_batch
from benchsuite.gradscan import named_trainable, scan
from benchsuite.gradscan.compare import TOLERANCES, compare_gradients, compare_signatures
from benchsuite.gradscan.signature import K, signatures
from benchsuite.harness.report import version, write_atomic
from benchsuite.harness.versions import environment


def build(layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=layers, num_attention_heads=12,
                      num_key_value_heads=12, vocab_size=32000, max_position_embeddings=1024,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).train()


def compare_variant(name: str, prec: str, exact_ref: dict, sig_ref: dict, pairs) -> tuple[dict, list[float]]:
    """The variant's gradients (now in the model) against the reference, exactly and from signatures; the
    ratios estimated / exact relative error of the parameters with a non-zero difference."""
    rtol = TOLERANCES[prec]
    exact = compare_gradients(exact_ref, {n: p.grad for n, p in pairs}, rtol=rtol)
    est = compare_signatures(sig_ref, signatures(pairs), rtol=rtol)
    ratios, zero_both, cos_err = [], 0, []
    for e in exact.records:
        s = est[e.name]
        if e.rel_error == 0.0:
            zero_both += s.rel_error == 0.0
            continue
        ratios.append(s.rel_error / e.rel_error)
        cos_err.append(abs(s.cosine - e.cosine))
    verdicts = sum(e.matches == est[e.name].matches for e in exact.records)
    row = {"variant": name, "precision": prec, "rtol": rtol, "parameters": len(exact.records),
           "exact": {"matches": exact.ok, "max_rel_error": exact.max_rel_error, "min_cosine": exact.min_cosine,
                     "worst": exact.worst, "differing": len(exact.differing)},
           "signature": {"matches": est.ok, "max_rel_error": est.max_rel_error, "min_cosine": est.min_cosine,
                         "worst": est.worst, "differing": len(est.differing)},
           "verdicts_agree": verdicts, "identical_both_ways": zero_both}
    if ratios:
        q = statistics.quantiles(ratios, n=20)
        row["ratio_estimated_to_exact"] = {"n": len(ratios), "min": min(ratios), "p5": q[0],
                                           "median": statistics.median(ratios), "p95": q[-1], "max": max(ratios),
                                           "sd": statistics.pstdev(ratios)}
        row["max_abs_cosine_error"] = max(cos_err)
    return row, ratios


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python experiments/signature_error.py")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)

    import torch

    model = build(args.layers)
    params = sum(p.numel() for p in model.parameters())
    batch = make_batch(model.config.vocab_size, args.batch, args.seq_len, "cpu")
    pairs = named_trainable(model)

    def run(checkpointing="off", accumulation=1, normalisation="token-weighted", precision="fp32"):
        model.zero_grad(set_to_none=True)
        if checkpointing == "off":
            model.gradient_checkpointing_disable()
        else:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": checkpointing == "reentrant"})
        micro = args.batch // accumulation
        for k in range(accumulation):
            sl = slice(k * micro, (k + 1) * micro)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=batch["input_ids"][sl], attention_mask=batch["attention_mask"][sl],
                             labels=batch["labels"][sl], use_cache=False).loss
            n_k = int((batch["labels"][sl, 1:] != -100).sum())
            loss = loss * n_k / batch["total_labelled"] if normalisation == "token-weighted" else loss / accumulation
            loss.backward()
        model.gradient_checkpointing_disable()

    t0 = time.perf_counter()
    run()
    ref_s = time.perf_counter() - t0
    exact_ref = {n: p.grad.detach().clone() for n, p in pairs}
    t0 = time.perf_counter()
    sig_ref = signatures(pairs)
    sig_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan(model)
    scan_s = time.perf_counter() - t0

    variants = [
        ("reentrant checkpointing", dict(checkpointing="reentrant"), "fp32"),
        ("non-reentrant checkpointing", dict(checkpointing="non-reentrant"), "fp32"),
        ("accumulation 2, token-weighted", dict(accumulation=2), "fp32"),
        ("accumulation 2, per-micro-batch mean", dict(accumulation=2, normalisation="micro-mean"), "fp32"),
        ("bf16 autocast", dict(precision="bf16"), "bf16"),
    ]
    out = []
    all_ratios = []
    for name, kw, prec in variants:
        print(f"{name} ...", file=sys.stderr, flush=True)
        run(**kw)
        row, ratios = compare_variant(name, prec, exact_ref, sig_ref, pairs)
        all_ratios += ratios
        out.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    q = statistics.quantiles(all_ratios, n=100)
    summary = {"n": len(all_ratios), "min": min(all_ratios), "p1": q[0], "p5": q[4],
               "median": statistics.median(all_ratios),
               "p95": q[94], "p99": q[98], "max": max(all_ratios), "sd": statistics.pstdev(all_ratios)}
    doc = {"benchsuite_version": version(), "kind": "signature-error", "params": params, "layers": args.layers,
           "batch": args.batch, "seq_len": args.seq_len, "sequence_lengths": batch["lengths"], "K": K,
           "environment": environment(),
           "command": "python experiments/signature_error.py " + " ".join(argv or sys.argv[1:]),
           "reference_forward_backward_s": ref_s, "signature_s": sig_s, "scan_s": scan_s,
           "variants": out, "ratio_all": summary}
    md = render(doc)
    print(md)
    if args.json:
        write_atomic(args.json, strictjson.dumps(doc, indent=2))
    if args.markdown:
        write_atomic(args.markdown, md)
    return 0


def render(doc: dict) -> str:
    r = doc["ratio_all"]
    lines = [f"# Gradient signature vs exact comparison: {doc['params'] / 1e6:.0f}M-parameter Llama, CPU", "",
             f"`{doc['command']}`; torch {doc['environment'].get('torch')}, transformers "
             f"{doc['environment'].get('transformers')}. Batch {doc['batch']} x {doc['seq_len']} "
             f"(sequence lengths {doc['sequence_lengths']}), K = {doc['K']} buckets per parameter.", "",
             "| variant (vs fp32, no checkpointing, accumulation 1) | rtol | exact: max rel. error / min cos / verdict "
             "| signature: max rel. error / min cos / verdict | per-parameter verdicts agree "
             "| estimated/exact rel. error (median, min-max) |", "|---|---|---|---|---|---|"]
    for v in doc["variants"]:
        e, s = v["exact"], v["signature"]
        ra = v.get("ratio_estimated_to_exact")
        rr = f"{ra['median']:.3f} ({ra['min']:.3f}-{ra['max']:.3f})" if ra else "identical gradients: 0 both ways"
        lines.append(f"| {v['variant']} | {v['rtol']:g} | {e['max_rel_error']:.3g} / {e['min_cosine']:.6f} / "
                     f"{'match' if e['matches'] else 'CHANGED'} | {s['max_rel_error']:.3g} / {s['min_cosine']:.6f} / "
                     f"{'match' if s['matches'] else 'CHANGED'} | {v['verdicts_agree']} of {v['parameters']} | {rr} |")
    lines += ["", f"Over all {r['n']} parameter comparisons with a non-zero difference, estimated / exact relative "
                  f"error: median {r['median']:.3f}, 1st-99th percentile {r['p1']:.3f}-{r['p99']:.3f}, "
                  f"min {r['min']:.3f}, "
                  f"max {r['max']:.3f}, standard deviation {r['sd']:.3f} (theory for K = {doc['K']}: about "
                  f"{(1 / (2 * doc['K'])) ** 0.5:.3f}).", "",
              f"Time on this CPU: the signature of all {doc['params'] / 1e6:.0f}M gradients {doc['signature_s']:.2f} s "
              f"(pure torch, streamed in chunks), scan() {doc['scan_s']:.2f} s, one forward and backward "
              f"{doc['reference_forward_backward_s']:.1f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
