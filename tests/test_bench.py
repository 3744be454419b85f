"""The benchmark grid: a small real grid, a failing configuration, out of memory, derived fields."""
from __future__ import annotations

import json
import subprocess
import sys

from benchsuite.bench.estimate import Shape, estimate
from benchsuite.bench.grid import DEFAULT_GRID, derive, expand, label, markdown, parse_grid, with_baselines

CLI = [sys.executable, "-m", "benchsuite", "bench"]


def test_default_grid_and_overrides():
    assert len(expand(parse_grid([], "cuda"))) == 36 and DEFAULT_GRID["precision"] == ["fp32", "fp16", "bf16"]
    assert len(expand(parse_grid([], "cpu"))) == 24  # fp16 on a CPU only when asked for
    grid = parse_grid(["accumulation=1,2", "adapter=lora"], "cuda")
    assert grid["accumulation"] == [1, 2] and grid["adapter"] == ["lora"]
    assert len(expand(grid)) == 3 * 2 * 3 * 1


def test_estimate_orders_the_options():
    s = Shape(layers=4, hidden=256, intermediate=688, heads=4, kv_heads=4, vocab=2048, params=4_200_000,
              trainable=4_200_000)
    kw = dict(batch=4, seq=512, accumulation=1)
    off = estimate(s, precision="fp32", checkpointing="off", **kw)["estimated_peak_memory_bytes"]
    ck = estimate(s, precision="fp32", checkpointing="reentrant", **kw)["estimated_peak_memory_bytes"]
    bf = estimate(s, precision="bf16", checkpointing="off", **kw)["estimated_peak_memory_bytes"]
    acc = estimate(s, precision="fp32", checkpointing="off", batch=4, seq=512, accumulation=4)["estimated_peak_memory_bytes"]
    assert ck < bf < off and acc < off


def test_checkpointing_without_recompute_is_flagged():
    base = dict(accumulation=1, precision="fp32", adapter="lora", status="ok", step_time_s=1.0,
                estimated_peak_memory_bytes=100)
    results = [dict(base, checkpointing="off", peak_memory_bytes=100, recompute_observed=False),
               dict(base, checkpointing="reentrant", peak_memory_bytes=100, recompute_observed=False)]
    derive(results)
    assert results[1]["checkpointing_took_effect"] is False
    assert "no recompute" in results[1]["checkpointing_flag"] and "not below" in results[1]["checkpointing_flag"]


def test_small_real_grid(tmp_path):
    out, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    proc = subprocess.run(CLI + ["--grid", "checkpointing=off,non-reentrant", "--grid", "accumulation=1,2",
                                 "--grid", "precision=fp32", "--grid", "adapter=lora", "--seq-len", "64",
                                 "--batch", "2", "--steps", "1", "--warmup", "0", "--scan", "--json", str(out),
                                 "--markdown", str(md), "--plot", str(png)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr  # (an unknown precision is a usage error: tests/test_cli.py)
    results = json.loads(out.read_text())["results"]
    assert len(results) == 4
    ok = [r for r in results if r["status"] == "ok"]
    assert len(ok) == 4
    for r in ok:
        for key in ("checkpointing", "accumulation", "precision", "adapter", "peak_memory_bytes",
                    "estimated_peak_memory_bytes", "step_time_s", "tokens_per_s", "loss_finite",
                    "peak_memory_source", "scan_overhead_fraction"):
            assert key in r, key
        assert r["peak_memory_bytes"] > 0 and r["loss_finite"]
        assert r["recompute_observed"] == (r["checkpointing"] != "off")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ckpt-nonre/acc2/fp32/lora" in md.read_text()
    # Every configuration's first-step gradients against ckpt-off/acc1/fp32/lora, on unequal lengths.
    assert len(set(ok[0]["labelled_tokens"])) > 1
    for r in ok:
        g = r["gradients"]
        assert g["baseline"] == "ckpt-off/acc1/fp32/lora" and g["matches"] is True, (label(r), g)
        assert g["max_rel_error"] <= 1e-5 and g["min_cosine"] > 0.99999 and g["no_grad_mismatch"] == []
        assert "gradient_signature" not in r  # compared in the parent, not written out
        if r["accumulation"] > 1:  # the per-micro-batch mean on the same batch: flagged
            mm = r["gradients_per_micro_batch_mean"]
            assert mm["matches"] is False and mm["max_rel_error"] > 0.05, mm
        else:
            assert "gradients_per_micro_batch_mean" not in r
    assert "| match (rel. error" in md.read_text() and "keep the baseline's gradients" in md.read_text()


def test_out_of_memory_is_recorded(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(CLI + ["--grid", "checkpointing=off", "--grid", "accumulation=1", "--grid", "precision=fp32",
                                 "--grid", "adapter=full,lora", "--seq-len", "64", "--batch", "2", "--steps", "1",
                                 "--warmup", "0", "--max-memory-mb", "8", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    results = json.loads(out.read_text())["results"]
    assert [r["status"] for r in results] == ["oom", "oom"]


def test_gradient_baselines_are_added_where_the_grid_lacks_them():
    configs = with_baselines(expand(parse_grid(["precision=bf16", "checkpointing=reentrant"], "cpu")))
    labels = [label(c) for c in configs]
    assert labels[:2] == ["ckpt-off/acc1/fp32/full", "ckpt-off/acc1/fp32/lora"]
    assert all(c.get("added_as") == "gradient baseline" for c in configs[:2]) and len(configs) == 2 + 4


def test_a_configuration_that_changes_gradients_is_flagged():
    """derive() on real signatures: one configuration loses a gradient, one is rescaled, one is rounding."""
    import torch

    from benchsuite.gradscan.signature import signature
    g = torch.Generator().manual_seed(0)
    grads = {"w": torch.randn(4096, generator=g), "b": torch.randn(64, generator=g)}
    sig = lambda d: {n: (signature(t).to_dict() if t is not None else signature(None, numel=64).to_dict())  # noqa: E731
                     for n, t in d.items()}
    base = dict(accumulation=1, precision="fp32", adapter="full", status="ok", step_time_s=1.0, tokens_per_s=1.0,
                estimated_peak_memory_bytes=100, peak_memory_bytes=100, recompute_observed=True, loss_finite=True)
    results = [dict(base, checkpointing="off", recompute_observed=False), dict(base, checkpointing="reentrant"),
               dict(base, checkpointing="non-reentrant"), dict(base, checkpointing="off", accumulation=4)]
    signatures = {
        "ckpt-off/acc1/fp32/full": {"gradient_signature": sig(grads)},
        "ckpt-re/acc1/fp32/full": {"gradient_signature": sig({"w": grads["w"], "b": None})},
        "ckpt-nonre/acc1/fp32/full": {"gradient_signature": sig({n: t * (1 + 1e-7) for n, t in grads.items()})},
        "ckpt-off/acc4/fp32/full": {"gradient_signature": sig({n: t * 1.25 for n, t in grads.items()})},
    }
    derive(results, signatures)
    off, re_, nonre, acc = (r["gradients"] for r in results)
    assert off["matches"] and off["max_rel_error"] == 0.0
    assert re_["matches"] is False and re_["no_grad_mismatch"] == ["b"] and re_["worst"] == "b"
    assert nonre["matches"] and nonre["max_rel_error"] < 1e-6
    assert acc["matches"] is False and 0.2 < acc["max_rel_error"] < 0.3 and acc["min_cosine"] > 0.9999
    md = markdown(results, {"environment": {}, "model": "m", "batch": 4, "seq_len": 8, "steps": 1, "warmup": 0,
                            "device": "cpu"})
    assert "**CHANGED** (1 without gradient on one side" in md
    assert "Configurations that change the gradients: ckpt-re/acc1/fp32/full, ckpt-off/acc4/fp32/full" in md


def test_bench_compares_gradients_of_a_remote_code_checkpoint(tmp_path):
    """--model PATH on the tiny ChatGLM (its own checkpointing code, through trust_remote_code)."""
    from benchsuite.models import write_chatglm
    path = write_chatglm(tmp_path / "chatglm")
    out = tmp_path / "b.json"
    proc = subprocess.run(CLI + ["--model", path, "--grid", "checkpointing=off,reentrant", "--grid", "accumulation=1,2",
                                 "--grid", "precision=fp32", "--grid", "adapter=full", "--seq-len", "32", "--batch", "2",
                                 "--steps", "1", "--warmup", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["status"] for r in results] == ["ok"] * 4
    for r in results:
        assert r["gradients"]["matches"] is True, (label(r), r["gradients"])
        assert r["gradients"]["baseline"] == "ckpt-off/acc1/fp32/full"
    ck = [r for r in results if r["checkpointing"] == "reentrant"]
    assert all(r["recompute_observed"] for r in ck)
    assert all(r["gradients_per_micro_batch_mean"]["matches"] is False for r in results if r["accumulation"] == 2)
