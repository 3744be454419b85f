"""The rules of issue 31 on their own: the loss series, the learning rate against its schedule, zero-everywhere
steps in and out of RL; and the signatures' bookkeeping (no script run; real torch optimizers and schedulers)."""
from __future__ import annotations

import math

import torch
from transformers import get_linear_schedule_with_warmup

from benchsuite.gradscan import ParamRecord
from benchsuite.watch import kinds as K
from benchsuite.watch import lr as L
from benchsuite.watch.loss import LossFeed, LossTrack
from benchsuite.watch.model import ModelTracker


def _zero(name):
    r = ParamRecord(name=name, dtype="float32", numel=4)
    r.zero = 4
    return r


def _ok(name):
    r = ParamRecord(name=name, dtype="float32", numel=4)
    r.sumsq, r.absmax = 1.0, 0.5
    return r


def _run(tracker, pattern):
    """pattern: per step, True for a gradient zero everywhere. Returns {step: kinds confirmed there}."""
    out = {}
    for step, zero in enumerate(pattern, 1):
        records = [_zero("a"), _zero("b")] if zero else [_ok("a"), _ok("b")]
        tracker.observe(step, records, {"a": 0.1, "b": 0.1}, set(), lambda names, s=step: {n: (s,) for n in names})
        tracker.count_zero_step(zero, step)
        new = tracker.evaluate(step)
        if new:
            out[step] = [k for k, _ in new]
    new = tracker.evaluate("end", final=True)
    if new:
        out["end"] = [k for k, _ in new]
    return out


def test_zero_everywhere_judged_outside_rl_counted_in_rl():
    assert _run(ModelTracker(confirm=3), [False, True, True, True, False]) == {4: ["zero-everywhere"]}
    # in RL: an occasional dead step, even three in a row, is not a finding; most steps dead is, at the end
    assert _run(ModelTracker(confirm=3, rl=True), [False, True, True, True, False, False, False]) == {}
    t = ModelTracker(confirm=3, rl=True)
    assert _run(t, [True, True, False, True, True]) == {"end": [K.RL_FEW_SIGNAL]}
    (f,) = t.report()
    assert "4 of 5 steps (80%)" in f["evidence"] and f["signs"] == ["grad-norm-zero", "loss-zero"]


def test_loss_rules():
    t = LossTrack()
    for step in range(1, 6):
        t.add(step, math.log(2.0) + (1e-8 if step % 2 else 0.0), None, True)
    act = t.active(False, 3, rl=False, scaler_seen=False)
    assert set(act) == {K.LOSS_FLAT} and "log 2" in act[K.LOSS_FLAT]["cause"]
    assert act[K.LOSS_FLAT]["signs"] == ["loss-flat", "loss-log2"]
    assert t.active(False, 3, rl=True, scaler_seen=False) == {}  # an RL loss is not an objective that must move
    t = LossTrack()
    for step, v in enumerate([2.0, 1.9, 1.8, 1.7, 1.75, 1.6, 0.0, 0.0, 0.0, 0.0, 0.0], 1):  # converged to 0
        t.add(step, v, None, True)
    assert t.active(True, 3, rl=False, scaler_seen=False) == {}
    t = LossTrack()
    for step in range(1, 4):
        t.add(step, float("nan"), "masked", True)
    act = t.active(False, 3, rl=False, scaler_seen=False)
    assert "every label of the batch is -100" in act[K.LOSS_NONFINITE]["cause"]
    t = LossTrack()  # one NaN batch in a run is not confirmed during the run
    for step, v in enumerate([2.0, float("nan"), 1.9, 1.8], 1):
        t.add(step, v, "valid", True)
    assert t.active(False, 3, rl=False, scaler_seen=False) == {} and t.active(True, 3, False, False) == {}
    t = LossTrack()
    for step, v in enumerate([1.0, 1.1, 0.9, 3.0, 20.0, 40.0, 80.0, 160.0, 320.0], 1):
        t.add(step, v, None, True)
    act = t.active(False, 3, rl=False, scaler_seen=False)
    assert set(act) == {K.LOSS_DIVERGING} and "from 1 to 160" in act[K.LOSS_DIVERGING]["evidence"]


def test_loss_feed_unscales_a_gradscaler_loss():
    feed = LossFeed()
    loss = torch.tensor(2.5, requires_grad=True)
    scaled = loss * 1024.0
    feed.scaled_by(scaled, loss)
    feed.backward(scaled, None)
    feed.backward(torch.tensor(0.5), None)  # a second micro-batch: the step's loss is the sum
    feed.forward({"labels": torch.full((2, 3), -100)})
    assert feed.take() == (3.0, "masked")
    assert feed.take() == (None, None)


def _lr_run(warmup: int, total: int, steps: int, every: int = 1):
    model = torch.nn.Linear(32, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = get_linear_schedule_with_warmup(opt, warmup, total)
    L.scheduler_made(sched)
    track, found = L.LrTrack(), {}
    for step in range(1, steps + 1):
        model(torch.randn(4, 32)).pow(2).mean().backward()
        track.observe(step, opt, list(model.named_parameters()), None, None, step)
        act = track.active(False, 3)
        if act and not found:
            found["step"] = step
        opt.step()
        opt.zero_grad()
        if step % every == 0:
            sched.step()
    return track, found, track.active(True, 3)


def test_learning_rate_rules():
    # a warmup of 100000 steps in a 10-step schedule: known from the schedule, confirmed during the run
    track, found, final = _lr_run(100000, 10, 10)
    assert found == {"step": 4} and "a warmup of 100000 steps, longer than the run (10 steps)" in final[K.LR_TINY][
        "cause"]
    # healthy: a warmup of 3 steps, and a linear decay to 0 at the end
    assert _lr_run(3, 10, 10)[1:] == ({}, {})
    # a warmup of 1000 steps that the run never finishes (a 1000-step schedule stopped at 8): only at the end
    track, found, final = _lr_run(1000, 1000, 8)
    assert found == {} and K.LR_TINY in final


def test_signatures_one_file_per_optimizer(tmp_path, monkeypatch):
    # the agent in this process (no script run): models trained in turn get a file each at their own first step,
    # also one whose optimizer class cannot be a dict key (it defines __eq__)
    from benchsuite.watch.agent import Watcher
    from benchsuite.watch.env import ENV_SIGNATURE
    monkeypatch.setenv(ENV_SIGNATURE, str(tmp_path / "sig.json"))
    w = Watcher()

    class Picky(torch.optim.SGD):
        def __eq__(self, other):
            return self is other

    for seed, kind in ((0, torch.optim.SGD), (1, torch.optim.SGD), (2, Picky)):
        torch.manual_seed(seed)
        model = torch.nn.Linear(3, 2)
        opt = kind(model.parameters(), lr=0.1)
        for _ in range(2):
            model(torch.ones(2, 3)).sum().backward()
            w.optimizer_pre_step(opt)
            opt.step()
            opt.zero_grad()
    assert [s["path"] for s in w.signatures] == [str(tmp_path / n) for n in ("sig.json", "sig.model2.json",
                                                                            "sig.model3.json")]
    assert [s["model"] for s in w.signatures] == [m.label for m in w.models] and w.signature == w.signatures[0]
    assert all(s["step"] == 1 and s["parameters"] == 2 for s in w.signatures) and not w.notes
