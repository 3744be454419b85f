"""The scan-bench comparisons as pytest-benchmark tests (CI runs them once with --benchmark-disable)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from benchsuite import scanbench


@pytest.fixture(scope="module")
def gpt2_fp32():
    return scanbench.make_tensors(scanbench.gpt2_124m_shapes(), torch.float32, torch.device("cpu"))


@pytest.fixture(scope="module")
def flat_fp32(gpt2_fp32):
    return torch.randn(sum(t.numel() for t in gpt2_fp32))


def test_fused(benchmark, gpt2_fp32):
    rows = benchmark(scanbench.fused_stats, gpt2_fp32)
    assert len(rows) == 148


def test_loop(benchmark, gpt2_fp32):
    rows = benchmark(scanbench.loop_stats, gpt2_fp32)
    assert len(rows) == 148


def test_foreach(benchmark, gpt2_fp32):
    rows = benchmark(scanbench.foreach_stats, gpt2_fp32)
    assert len(rows) == 148


def test_roofline(benchmark, flat_fp32):
    expected = float(flat_fp32.double().sum())
    assert benchmark(lambda: flat_fp32.sum().item()) == pytest.approx(expected, rel=1e-3, abs=1.0)


def test_methods_agree_on_planted_values(gpt2_fp32):
    ts = [t.clone() for t in gpt2_fp32[:6]]
    ts[1][0, 0], ts[2][3], ts[3][0] = float("nan"), float("-inf"), 0.0
    ref = scanbench.loop_stats(ts)
    for got, rtol in ((scanbench.fused_stats(ts), 1e-6), (scanbench.foreach_stats(ts), 1e-2)):
        for a, b in zip(got, ref):
            assert a[:4] == b[:4]  # counts are exact in both
            assert a[4] == pytest.approx(b[4], rel=rtol) and a[5] == pytest.approx(b[5], rel=1e-6)


def test_scan_bench_command_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchsuite", "scan-bench", "--lists", "1000-small",
                           "--dtypes", "float32", "--reps", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    b = data["benchmarks"][0]
    assert b["list"] == "1000-small" and b["tensors"] == 1000 and b["outputs_agree"] is True
    assert set(b["methods"]) >= {"fused", "loop", "foreach", "roofline"}
    assert data["machine_info"]["packages"]["torch"]


@pytest.fixture(scope="module", params=[291, 1000])
def small_grads(request):
    """291 (a 7B model's parameter count) and 1,000 trainable tensors with gradients."""
    params = [torch.nn.Parameter(torch.zeros(64)) for _ in range(request.param)]
    for p in params:
        p.grad = torch.randn(64)
    return [(f"model.layers.{i // 7}.proj{i % 7}.weight", p) for i, p in enumerate(params)]


def test_host_launch(benchmark, small_grads):
    """The Python side of launching one scan (the table is kept: addresses are unchanged)."""
    from benchsuite.gradscan import _scan
    pending = benchmark(_scan.launch, small_grads)
    assert len(pending.records) == len(small_grads) and pending.backend == "cpu"


def test_host_launch_and_finish(benchmark, small_grads):
    from benchsuite.gradscan import _scan
    report = benchmark(lambda: _scan.launch(small_grads).finish())
    assert report.ok and len(report.records) == len(small_grads)


def test_table_kept_while_addresses_are_unchanged(small_grads):
    from benchsuite.gradscan import _native
    grads = [p.grad for _, p in small_grads]
    cache = _native.TableCache()
    assert cache.update(grads) is True
    table = cache.table
    assert cache.update(grads) is False and cache.table is table  # nothing rebuilt
    grads[5] = grads[5].clone()  # one gradient got new storage
    assert cache.update(grads) is True and int(cache.table[5, 0]) == grads[5].data_ptr()


def test_host_cost_command(tmp_path):
    out = tmp_path / "host.json"
    proc = subprocess.run([sys.executable, "-m", "benchsuite", "scan-bench", "--host-cost", "--reps", "1",
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["host_cost"]
    assert [r["tensors"] for r in rows] == [291, 1000]
    for r in rows:
        assert r["reps"] == 30 and min(r["launch_ms"], r["finish_ms"], r["table_rebuilt_ms"], r["table_reused_ms"]) > 0
