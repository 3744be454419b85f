"""The benchmark grid: a small real grid, a failing configuration, out of memory, derived fields."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchsuite.bench.estimate import Shape, estimate
from benchsuite.bench.grid import DEFAULT_GRID, derive, expand, label, markdown, parse_grid, with_baselines
from benchsuite.bench.plot import figure
from benchsuite.bench.report import recommend

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
    acc = estimate(s, precision="fp32", checkpointing="off", batch=4, seq=512,
                   accumulation=4)["estimated_peak_memory_bytes"]
    assert ck < bf < off and acc < off


def test_checkpointing_without_recompute_is_flagged():
    base = dict(accumulation=1, precision="fp32", adapter="lora", status="ok", step_time_s=1.0,
                estimated_peak_memory_bytes=100)
    results = [dict(base, checkpointing="off", peak_memory_bytes=100, recompute_observed=False),
               dict(base, checkpointing="reentrant", peak_memory_bytes=100, recompute_observed=False)]
    derive(results)
    assert results[1]["checkpointing_took_effect"] is False
    assert "no recompute" in results[1]["checkpointing_flag"] and "not below" in results[1]["checkpointing_flag"]


def test_small_real_grid(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")  # the tests' own (conftest): here bench must keep it
    out, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    tmp = tmp_path / "tmp"  # its $TMPDIR, left empty
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run(CLI + ["--grid", "checkpointing=off,non-reentrant", "--grid", "accumulation=1,2",
                                 "--grid", "precision=fp32", "--grid", "adapter=lora", "--seq-len", "64",
                                 "--batch", "2", "--steps", "1", "--warmup", "0", "--scan", "--json", str(out),
                                 "--markdown", str(md), "--plot", str(png)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr  # (an unknown precision is a usage error: tests/commands/test_cli.py)
    assert list(tmp.iterdir()) == []
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
    assert "**2 of 4 configurations change the gradients:**" in md
    table = md[md.index("change the gradients:**"):]
    assert "| ckpt-re/acc1/fp32/full | **CHANGED**" in table and "| ckpt-off/acc4/fp32/full | **CHANGED**" in table
    assert "ckpt-nonre/acc1/fp32/full" not in table  # the table lists only what changed


def test_bench_compares_gradients_of_a_remote_code_checkpoint(tmp_path):
    """--model PATH on the tiny ChatGLM (its own checkpointing code, through trust_remote_code)."""
    from benchsuite.models import write_chatglm
    path = write_chatglm(tmp_path / "chatglm")
    out = tmp_path / "b.json"
    proc = subprocess.run(CLI + ["--model", path, "--grid", "checkpointing=off,reentrant", "--grid", "accumulation=1,2",
                                 "--grid", "precision=fp32", "--grid", "adapter=full", "--seq-len", "32",
                                 "--batch", "2",
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


# ---------------------------------------------------------------- what a person chooses from (issue 32)

META = {"environment": {}, "model": "m", "batch": 4, "seq_len": 8, "steps": 1, "warmup": 0, "device": "cpu"}


def _result(ck, acc, prec, adapter, mib, tps, matches=True, micro_mean=None):
    """A finished configuration as the grid records it (gradients compared, as derive() leaves them)."""
    g = {"baseline": f"ckpt-off/acc1/fp32/{adapter}", "matches": matches, "max_rel_error": 0.0 if matches else 0.5,
         "min_cosine": 1.0 if matches else 0.8, "no_grad_mismatch": [], "worst": "w"}
    r = {"checkpointing": ck, "accumulation": acc, "precision": prec, "adapter": adapter, "status": "ok",
         "peak_memory_bytes": int(mib * 2**20), "estimated_peak_memory_bytes": int(mib * 2**20), "step_time_s": 1.0,
         "tokens_per_s": float(tps), "loss_finite": True, "recompute_observed": ck != "off", "gradients": g}
    if micro_mean is not None:
        r["gradients_per_micro_batch_mean"] = dict(g, matches=micro_mean, max_rel_error=1.2, min_cosine=0.6)
    return r


def _mixed() -> list[dict]:
    results = [_result("off", 1, "fp32", "full", 900, 1000), _result("reentrant", 1, "fp32", "full", 600, 700),
               _result("off", 4, "fp32", "full", 500, 900, micro_mean=False),
               _result("non-reentrant", 4, "fp32", "full", 300, 2000, matches=False, micro_mean=False),
               _result("off", 1, "fp32", "lora", 400, 1500), _result("reentrant", 1, "fp32", "lora", 250, 1200),
               _result("off", 4, "fp32", "lora", 200, 1100, micro_mean=False)]
    derive(results)
    return results


def _legend(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_plot_shows_only_the_series_that_ran():
    results = [_result("off", 1, "fp32", "lora", 400, 1500), _result("non-reentrant", 1, "fp32", "lora", 250, 1200)]
    derive(results)
    fig = figure(results, "t")
    legend = _legend(fig)
    assert legend == ["checkpointing off", "checkpointing non-reentrant", "fp32", "Pareto front (bold labels)"]
    assert [ax.get_title() for ax in fig.axes] == ["LoRA (2 configurations)"]  # no empty full-fine-tuning panel
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(texts) == ["ckpt-nonre/acc1/fp32", "ckpt-off/acc1/fp32"]
    # Several accumulation values, bf16 and a changed configuration appear in the legend once they ran.
    results.append(_result("reentrant", 4, "bf16", "lora", 200, 900, matches=False))
    legend = _legend(figure(results, "t"))
    assert {"checkpointing reentrant", "bf16", "accumulation 4 (ringed)",
            "gradients changed: not a choice"} <= set(legend)
    assert not any("budget" in t for t in legend)


def test_full_fine_tuning_and_lora_are_apart():
    results = _mixed()
    fig = figure(results, "t")
    assert [ax.get_title() for ax in fig.axes] == ["full fine-tuning (4 configurations)", "LoRA (3 configurations)"]
    for ax, adapter in zip(fig.axes, ("full", "lora")):
        mine = {r["peak_memory_bytes"] / 2**20 for r in results if r["adapter"] == adapter}
        shown = {float(x) for c in ax.collections for x, _ in c.get_offsets()}
        assert shown == mine, adapter
        front = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert len(front) == 1 and set(front[0].get_xdata()) <= mine
    # Each adapter's front: a configuration that changes the gradients is no choice, however good it looks.
    full_front = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "--"][0]
    assert list(full_front.get_xdata()) == [500.0, 900.0]  # not the 300 MiB one (gradients changed), not 600
    assert all("ckpt-nonre/acc4/fp32  GRADIENTS CHANGED" != t.get_text() or t.get_color() == "red"
               for t in fig.axes[0].texts)


def test_budget_names_the_fastest_configuration_that_fits():
    results = _mixed()
    lines = recommend(results, 0.5)  # 512 MiB
    assert lines == ["fits in 0.5 GiB, full fine-tuning: ckpt-off/acc4/fp32/full (500 MiB peak, 900 tokens/s; "
                     "fastest of 1 that fit)",  # the 300 MiB one changes the gradients: not offered
                     "fits in 0.5 GiB, LoRA: ckpt-off/acc1/fp32/lora (400 MiB peak, 1500 tokens/s; "
                     "fastest of 3 that fit)"]
    assert recommend(results, 0.25) == [
        "nothing fits in 0.25 GiB, full fine-tuning: the least memory measured is ckpt-off/acc4/fp32/full "
        "(500 MiB peak)",
        "fits in 0.25 GiB, LoRA: ckpt-re/acc1/fp32/lora (250 MiB peak, 1200 tokens/s; fastest of 2 that fit)"]
    md = markdown(results, {**META, "budget_gib": 0.5})
    assert "**Fits in 0.5 GiB, LoRA: ckpt-off/acc1/fp32/lora (400 MiB peak" in md
    assert md.index("Fits in 0.5 GiB") < md.index("| configuration |")  # above the table, where a reader starts
    fig = figure(results, "t", 0.5)
    assert any(t.get_text().startswith("fits in 0.5 GiB, full fine-tuning: ckpt-off/acc4/fp32/full") for t in fig.texts)
    assert "budget 0.5 GiB, its pick" in _legend(fig)
    # A budget far above every point is an arrow at the edge: the points keep the panel's width.
    fig = figure(results, "t", 80)
    for ax in fig.axes:
        assert ax.get_xlim()[1] < 2000 and "budget 80 GiB →" in [t.get_text() for t in ax.texts]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_budget_must_be_a_positive_size(value, tmp_path):
    proc = subprocess.run(CLI + ["--budget", value, "--grid", "adapter=lora", "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--budget" in proc.stderr and not (tmp_path / "b.json").exists()


def test_no_changed_table_when_every_configuration_keeps_its_gradients():
    results = [_result("off", 1, "fp32", "lora", 400, 1500),
               _result("off", 4, "fp32", "lora", 200, 1100, micro_mean=False),
               _result("reentrant", 4, "fp32", "lora", 150, 900, micro_mean=False)]
    derive(results)
    md = markdown(results, META)
    assert "CHANGED" not in md and "change the gradients" not in md
    assert "All 3 configurations keep the baseline's gradients." in md
    # The per-micro-batch-mean check is one sentence, not a table of failures.
    assert "2 of the 2 accumulation configurations would have been flagged (relative error up to 1.2e+00)" in md
    assert "per-micro-batch-mean gradients vs baseline |" not in md
