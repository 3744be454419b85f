"""The scanner's counts against the torch oracle, every dtype, bad input, async mode, hooks."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchsuite import gradscan
from benchsuite.gradscan import (
    ALL_ZERO,
    NO_GRADIENT,
    NON_FINITE,
    AsyncScanner,
    GradientProblemError,
    GradScanHook,
    scan,
    scan_tensors,
    tensor_stats,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def assert_matches_oracle(report, tensors):
    for rec, t in zip(report, tensors):
        nan, pinf, ninf, zero, ss, am = tensor_stats(t)
        assert (rec.nan, rec.posinf, rec.neginf, rec.zero) == (nan, pinf, ninf, zero), rec.name
        assert rec.absmax == pytest.approx(am, rel=0, abs=0), rec.name  # max is exact
        assert rec.sumsq == pytest.approx(ss, rel=1e-5, abs=1e-30), rec.name


def planted(n, dtype, device, seed, nan=0, pinf=0, ninf=0, zero=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 3
    x[x == 0] = 1.0
    pos = torch.randperm(n, generator=g)
    cuts = [nan, pinf, ninf, zero]
    vals = [math.nan, math.inf, -math.inf, 0.0]
    start = 0
    for c, v in zip(cuts, vals):
        x[pos[start:start + c]] = v
        start += c
    return x.to(dtype).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_planted_counts_every_dtype(dtype, device):
    t = planted(100_003, dtype, device, seed=1, nan=7, pinf=5, ninf=3, zero=11)
    rep = scan_tensors([t])
    r = rep.records[0]
    assert (r.nan, r.posinf, r.neginf, r.zero) == (7, 5, 3, 11)
    assert_matches_oracle(rep, [t])
    assert rep.backend == device


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_property_against_oracle(device, data):
    tensors = []
    for _ in range(data.draw(st.integers(1, 5))):
        dtype = data.draw(st.sampled_from(DTYPES))
        n = data.draw(st.integers(0, 200_000))
        k = [data.draw(st.integers(0, min(n, 50))) for _ in range(4)]
        while sum(k) > n:
            k = [max(0, c - 1) for c in k]
        t = planted(n, dtype, device, seed=data.draw(st.integers(0, 2**31)), nan=k[0], pinf=k[1], ninf=k[2], zero=k[3])
        if data.draw(st.booleans()) and n > 2:  # an offset view: unaligned start
            t = t[1:]
        tensors.append(t)
    assert_matches_oracle(scan_tensors(tensors), tensors)


def test_subnormal_half_and_extremes():
    t = torch.tensor([6e-8, -6e-8, 65504.0, -65504.0, 0.0, -0.0, math.inf, -math.inf, math.nan], dtype=torch.float16)
    rep = scan_tensors([t])
    assert_matches_oracle(rep, [t])
    assert rep.records[0].zero == 2  # -0.0 counts as zero


def test_empty_inputs():
    assert len(scan_tensors([])) == 0
    rep = scan_tensors([torch.zeros(0)])
    assert rep.records[0].numel == 0 and rep.records[0].zero == 0 and not rep.problems
    assert len(scan(torch.nn.Linear(2, 2).requires_grad_(False))) == 0


def test_none_grads_and_frozen_params():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # frozen: not "missing"
    model(torch.randn(3, 4)).sum().backward()
    model[1].bias.grad = None
    rep = scan(model)
    names = [r.name for r in rep]
    assert "0.weight" not in names
    assert rep["1.bias"].none and rep.names(NO_GRADIENT) == ["1.bias"]
    assert not rep["0.bias"].none


def test_non_contiguous_views():
    base = torch.randn(300, 500)
    base[7, 9] = math.nan
    dense_permuted = base.t()            # non-contiguous but dense: scanned in place
    strided = base[:, ::3]               # not dense: scanned through a copy
    rep = scan_tensors([dense_permuted, strided])
    assert_matches_oracle(rep, [dense_permuted, strided])
    assert rep.records[0].nan == 1 and rep.records[1].nan == 1


def test_sparse_gradient_counts_implicit_zeros():
    emb = torch.nn.Embedding(50, 8, sparse=True)
    emb(torch.tensor([1, 2, 2])).sum().backward()
    rep = scan(emb)
    r = rep.records[0]
    dense = emb.weight.grad.to_dense()
    assert r.zero == int((dense == 0).sum())
    assert r.sumsq == pytest.approx(float((dense.double() ** 2).sum()))


def test_integer_tensor_is_counted_exactly():
    t = torch.tensor([0, 3, -4, 0], dtype=torch.int32)
    r = scan_tensors([t]).records[0]
    assert (r.nan, r.zero, r.sumsq, r.absmax) == (0, 2, 25.0, 4.0)


def test_complex_and_meta_gradients_name_the_parameter():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    p.grad = torch.ones(3, dtype=torch.complex64)
    with pytest.raises(ValueError, match="'cplx'.*complex"):
        scan({"cplx": p})
    m = torch.nn.Parameter(torch.empty(3, device="meta"))
    m.grad = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match="'m'.*meta"):
        scan({"m": m})


def test_problems_and_expected_lora_zero():
    a = torch.nn.Parameter(torch.randn(4, 4))
    b = torch.nn.Parameter(torch.zeros(4, 4))
    bad = torch.nn.Parameter(torch.randn(3))
    dead = torch.nn.Parameter(torch.randn(3))
    a.grad, b.grad = torch.zeros(4, 4), torch.randn(4, 4)
    bad.grad = torch.tensor([1.0, math.inf, 2.0])
    dead.grad = torch.zeros(3)
    rep = scan({"x.lora_A.default.weight": a, "x.lora_B.default.weight": b, "bad": bad, "dead": dead})
    assert rep.names(NON_FINITE) == ["bad"]
    assert rep.names(ALL_ZERO) == ["dead"]  # lora_A is zero by design while lora_B is zero
    assert rep["x.lora_A.default.weight"].expected_zero
    assert "non-finite" in rep.summary() and not rep.ok


def test_totals_match_clip_grad_norm():
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 1))
    model(torch.randn(5, 16)).sum().backward()
    expected = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    assert scan(model).total_norm == pytest.approx(float(expected), rel=1e-5)


def test_async_scanner_reports_previous_step():
    model = torch.nn.Linear(8, 2)
    scanner = AsyncScanner(model)
    seen = []
    for step in range(3):
        model.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        if step == 1:
            model.weight.grad[0, 0] = math.nan
        prev = scanner.step()
        seen.append(prev)
    last = scanner.flush()
    assert seen[0] is None
    assert seen[2].step == 1 and seen[2].names(NON_FINITE) == ["weight"]
    assert last.step == 2 and last.ok


def test_hook_policies_and_jsonl_log(tmp_path):
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    log = tmp_path / "scan.jsonl"
    hook = GradScanHook(model, policy="record", log_path=log)
    handle = hook.attach(opt)
    for step in range(2):
        model(torch.randn(2, 4)).sum().backward()
        if step == 1:
            model.bias.grad.fill_(math.inf)
        opt.step()
        opt.zero_grad()
    handle.remove()
    hook.close()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [0, 1]
    assert lines[1]["problems"] == [{"kind": NON_FINITE, "names": ["bias"]}]
    assert lines[1]["params"][0]["posinf"] == 1
    assert lines[1]["confirmed"] == [{"kind": NON_FINITE, "names": ["bias"]}]  # final at once

    # No gradient is a finding once it persists (--confirm, 3 scans), never at one step.
    raising = GradScanHook(model, policy="raise")
    model.zero_grad(set_to_none=True)
    raising(), raising()
    with pytest.raises(GradientProblemError, match="no gradient in 2 parameter"):
        raising()
    warning_hook = GradScanHook(model, policy="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warning_hook(), warning_hook()
    with pytest.warns(RuntimeWarning, match="no gradient"):
        warning_hook()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warning_hook()  # the same finding is not warned about twice
    assert [f["kind"] for f in warning_hook.findings()] == ["no-gradient"]


def test_hook_zero_step_is_not_a_finding_and_lr_is_read_from_the_optimizer():
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    hook = GradScanHook(model, policy="raise")
    hook.attach(opt)
    for step in range(2):  # lr 0 for fewer scans than --confirm: not yet a finding during the run
        loss = model(torch.randn(2, 4)).sum() * (0.0 if step == 1 else 1.0)  # one step with zero gradient
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert hook.reports[-1].names("all-zero") == ["weight", "bias"] and hook.findings() == []  # the step's raw view
    hook.close()
    assert [f["kind"] for f in hook.findings()] == ["lr-zero"]  # lr 0 at every step of the run


def test_trainer_callback_records_lora_problem(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from benchsuite.gradscan import GradScanCallback
    from benchsuite.models import tiny_llama

    model = get_peft_model(tiny_llama("causal"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    # A planted failure: one adapter detached from the graph, so it never gets a gradient.
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    q_proj.lora_A["default"].register_forward_hook(lambda m, i, o: o.detach())
    ids = torch.randint(1, 200, (4, 8))
    data = [{"input_ids": r, "labels": r} for r in ids]
    cb = GradScanCallback(policy="record", log_path=tmp_path / "cb.jsonl")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2,
                             report_to="none", use_cpu=True, save_strategy="no", logging_strategy="no")
    Trainer(model=model, args=args, train_dataset=data, callbacks=[cb]).train()
    assert len(cb.reports) == 2
    assert any("layers.0.self_attn.q_proj.lora_A" in n for n in cb.reports[0].names(NO_GRADIENT))
    assert not any("layers.1" in n for n in cb.reports[1].names(NO_GRADIENT))
    assert len((tmp_path / "cb.jsonl").read_text().splitlines()) == 2


def test_fallback_without_core_warns_and_matches():
    code = (
        "import sys, warnings; sys.modules['benchsuite._core'] = None\n"
        "import torch, math\n"
        "from benchsuite.gradscan import scan_tensors\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    r = scan_tensors([torch.tensor([1.0, math.nan, 0.0])])\n"
        "print(r.backend, r.records[0].nan, r.records[0].zero, len([x for x in w if '_core' in str(x.message)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["torch", "1", "1", "1"]


@pytest.mark.slow
def test_more_than_2_31_elements():
    n = 2**31 + 9
    t = torch.zeros(n, dtype=torch.bfloat16)
    t[-1] = math.nan
    t[2**31 + 1] = 2.0
    t[5] = -math.inf
    r = scan_tensors([t]).records[0]
    assert (r.numel, r.nan, r.neginf, r.zero, r.sumsq, r.absmax) == (n, 1, 1, n - 3, 4.0, 2.0)
    del t


@pytest.mark.cuda
def test_cuda_mixed_devices_and_async():
    cpu = planted(10_000, torch.float32, "cpu", 3, nan=2)
    gpu = planted(3_000_000, torch.bfloat16, "cuda", 4, pinf=1, zero=9)
    rep = scan_tensors([cpu, gpu])
    assert rep.backend == "cuda"
    assert_matches_oracle(rep, [cpu, gpu])
    model = torch.nn.Linear(64, 64).cuda()
    scanner = AsyncScanner(model)
    model(torch.randn(8, 64, device="cuda")).sum().backward()
    assert scanner.step() is None
    assert scanner.flush().ok


@pytest.mark.cuda
def test_cuda_all_nan_and_many_tensors():
    tensors = [torch.full((1000 + i,), math.nan, device="cuda", dtype=torch.float16) for i in range(1500)]
    rep = scan_tensors(tensors)
    assert all(r.nan == r.numel for r in rep)
    assert gradscan.native_available()


def test_async_scanner_decides_lora_zeros_from_values_scanned_at_launch(monkeypatch):
    """H1: the first step's lora_A gradient is zero because lora_B starts at zero. AsyncScanner decides that
    from lora_B's values scanned in the same pass as the gradients (no read-back at launch), as they were
    then: after the optimizer step lora_B is no longer zero, and a late look would call lora_A dead."""
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"]))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    scanner = AsyncScanner(model)
    reports = []
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        with monkeypatch.context() as m:  # launching reads nothing back from any tensor
            m.setattr(torch.Tensor, "count_nonzero", lambda *a, **k: pytest.fail("count_nonzero at launch"))
            m.setattr(torch.Tensor, "item", lambda *a, **k: pytest.fail("item() at launch"))
            reports.append(scanner.step())
        opt.step()
    first = reports[1]
    lora_a = [r for r in first.records if "lora_A" in r.name]
    assert first.step == 0 and lora_a and all(r.all_zero and r.expected_zero for r in lora_a)
    assert first.ok, first.summary()
    assert all("value" not in r.name for r in first.records)  # the partner values are not parameters
    assert not any(r.all_zero for r in scanner.flush().records if "lora_A" in r.name)  # B moved: A gets gradients


@pytest.mark.cuda
def test_cuda_route_self_check_and_alternating_accumulators():
    """On a GPU: the kernel is loaded by a route and passes its first-use self-check; scans that reuse the
    table and alternate the two accumulators keep giving the oracle's numbers, also after the tensor list
    changes size."""
    from benchsuite.gradscan import _cuda
    st = _cuda.device_state(torch.cuda.current_device())
    assert st.ready, st.error
    assert st.route["kind"] in ("fatbin", "nvrtc") and st.selfcheck["ok"], (st.route, st.selfcheck)
    a = planted(300_001, torch.bfloat16, "cuda", 5, nan=3, zero=4)
    b = planted(70_000, torch.float32, "cuda", 6, ninf=2)
    for tensors in ([a, b], [a, b], [a, b], [b], [a, b, a[1:]]):
        rep = scan_tensors(tensors)
        assert rep.backend == "cuda"
        assert_matches_oracle(rep, tensors)
