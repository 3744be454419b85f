"""The benchmark grid: a small real grid, a failing configuration, out of memory, derived fields."""
from __future__ import annotations

import json
import subprocess
import sys

from benchsuite.bench.estimate import Shape, estimate
from benchsuite.bench.grid import DEFAULT_GRID, derive, expand, parse_grid

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


def test_out_of_memory_is_recorded(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(CLI + ["--grid", "checkpointing=off", "--grid", "accumulation=1", "--grid", "precision=fp32",
                                 "--grid", "adapter=full,lora", "--seq-len", "64", "--batch", "2", "--steps", "1",
                                 "--warmup", "0", "--max-memory-mb", "8", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    results = json.loads(out.read_text())["results"]
    assert [r["status"] for r in results] == ["oom", "oom"]
