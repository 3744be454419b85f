"""`benchsuite watch`, third round (issue 31): the loss, the learning rate, RL steps without signal, several models
in one process, and the exit code of a run caught at its end. Every script runs unmodified under
--policy raise: each healthy variant ends with exit 0 and no finding, each broken one is stopped (or failed at its
end) with its cause named."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from messages import empty_fields

from benchsuite.watch.env import PREFIX
from benchsuite.watch.stop import STOPPED_EXIT

SCRIPTS = Path(__file__).parent.parent / "watch_scripts"
CLI = [sys.executable, "-m", "benchsuite", "watch"]
LOOP = str(SCRIPTS / "plain_loop.py")
RL = str(SCRIPTS / "rl_loop.py")
REGRESS = str(SCRIPTS / "regress_loop.py")
MULTI = str(SCRIPTS / "multi_trainer.py")
TRL = str(SCRIPTS / "trl_trainers.py")


def watch(folder: Path, args: list[str], options: list[str]):
    out = folder / "watch.json"
    cmd = CLI + ["--json", str(out), "--log", str(folder / "steps.jsonl"), *options, "--", sys.executable,
                 *[a.replace("{tmp}", str(folder / "out")) for a in args]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=folder,
                          env={**os.environ, "TMPDIR": str(folder), "OMP_NUM_THREADS": "1"})
    return proc, json.loads(out.read_text())


def run_all(factory, runs: dict, jobs: int = 3) -> dict:
    folders = {name: factory.mktemp(name[:40]) for name in runs}
    with ThreadPoolExecutor(jobs) as pool:
        done = {name: pool.submit(watch, folders[name], *runs[name]) for name in runs}
        return {name: f.result() for name, f in done.items()}


def open_findings(summary, model=None) -> dict:
    proc = summary["processes"][0]
    return {f["kind"]: f for f in proc["findings"] if f["status"] == "open" and (model is None or f["model"] == model)}


RAISE = ["--policy", "raise"]
STOP = STOPPED_EXIT  # watch stopped the run (issue 32)

# name -> (script and arguments, watch options)
HEALTHY = {
    "lr-decays-to-zero-cosine": ([LOOP, "--schedule", "cosine", "--steps", "8"], RAISE),
    "warmup-of-two-steps-linear-decay": ([LOOP, "--warmup", "2", "--schedule", "linear", "--steps", "8"], RAISE),
    "torch-warmup-stepped-per-step": ([LOOP, "--schedule", "torch-warmup", "--warmup", "2", "--steps", "6"], RAISE),
    "fp16-autocast-with-gradscaler": ([LOOP, "--amp", "float16", "--steps", "6"], RAISE),
    "bf16-autocast": ([LOOP, "--amp", "bfloat16", "--steps", "6"], RAISE),
    "regression-lr-ok": ([REGRESS, "--lr", "0.01"], RAISE),
    "rl-loop-some-zero-advantage-steps": ([RL, "--equal-at", "2,3,4,7"], ["--rl", *RAISE]),
    "three-trainers-healthy": ([MULTI, "--runs", "healthy,healthy,healthy", "--out", "{tmp}"], RAISE),
}

BROKEN = {
    # name -> (script and arguments, watch options, exit code, finding kind, confirmed at, words of the cause)
    "every-label-masked": ([LOOP, "--mask-labels", "--steps", "6"], RAISE, STOP, "loss-nonfinite", 3,
                           "every label of the batch is -100"),
    "warmup-longer-than-the-run": ([LOOP, "--warmup", "100000", "--schedule", "linear", "--steps", "8"], RAISE, STOP,
                                   "lr-tiny", 4, "a warmup of 100000 steps, longer than the run"),
    "scheduler-stepped-per-epoch": ([LOOP, "--schedule", "torch-warmup", "--warmup", "10", "--sched-every", "100",
                                     "--steps", "8"], RAISE, STOP, "lr-tiny", 3, "stepped per epoch"),
    "lr-too-high-diverges": ([REGRESS, "--lr", "0.5"], RAISE, STOP, "loss-diverging", 8, "learning rate is too high"),
    "zero-everywhere-outside-rl": ([RL, "--equal-at", "2,3,4"], RAISE, STOP, "zero-everywhere", 5,
                                   "not an RL trainer"),
    "rl-most-steps-without-signal": ([RL, "--equal-at", "0,1,3,4,6,7,9"], ["--rl", *RAISE], 3, "rl-few-signal",
                                     "end", "zero advantage"),
    # the adapters are in no optimizer and nothing else trains: the loss stays exactly constant, which stops the
    # run at step 5; the parameters in no optimizer are named at its end (6 steps are too few before)
    "optimizer-before-get_peft_model-short": ([LOOP, "--optimizer-before-peft", "--steps", "6"], RAISE, STOP,
                                              "loss-flat", 5, "nothing trains"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    todo = {**HEALTHY, **{k: v[:2] for k, v in BROKEN.items()}}
    return run_all(tmp_path_factory, todo)


@pytest.mark.parametrize("variant", list(HEALTHY))
def test_healthy_variants_pass_under_raise(runs, variant):
    proc, summary = runs[variant]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["verdict"] == "healthy" and open_findings(summary) == {}
    assert "healthy: no finding" in proc.stderr and "WatchProblemError" not in proc.stderr
    p = summary["processes"][0]
    assert p["scans"] >= 6 and all(m["losses"] for m in p["models"])  # the loss was seen at every model
    if variant == "rl-loop-some-zero-advantage-steps":
        assert p["zero_gradient_steps"] == [3, 4, 5, 8]  # counted, not judged: the script is RL (--rl)
    if variant == "three-trainers-healthy":
        assert [m["label"] for m in p["models"]] == ["Trainer #1", "Trainer #2", "Trainer #3"]
        assert "3 models trained in this process, each judged alone" in proc.stderr
        assert proc.stderr.count("healthy: no finding in 6 scans") == 3


@pytest.mark.parametrize("variant", list(BROKEN))
def test_broken_variants_stopped_with_cause(runs, variant):
    _, _, code, kind, step, cause = BROKEN[variant]
    proc, summary = runs[variant]
    assert proc.returncode == code, proc.stderr[-3000:]
    f = open_findings(summary)
    assert kind in f and f[kind]["confirmed_at"] == step, f
    assert cause in f[kind]["cause"] and cause in proc.stderr
    if code == STOPPED_EXIT:
        assert f"stopping at step {step} (--policy raise)" in proc.stderr
    else:
        assert summary["script_exit_code"] == 0 and "exit code 3: the script exited 0" in proc.stderr
    if kind == "loss-nonfinite":
        assert f[kind]["cases"] and "loss-nonfinite" in f[kind]["signs"]
        assert summary["processes"][0]["losses"][0] == "nan"  # strict JSON; `doctor --log` reads it as NaN
    if kind == "lr-tiny":
        assert "lr-zero" in f[kind]["signs"] and "learning rate at most" in f[kind]["evidence"]
    if variant == "optimizer-before-get_peft_model-short":
        # issue 32: after a stop nothing is judged "at the end"; the parameters in no optimizer are named, not judged
        assert "not-in-optimizer" not in f and "never-changed" not in f
        model = summary["processes"][0]["models"][0]
        assert model["not_judged"]["step"] == 5 and len(model["not_judged"]["in_no_optimizer"]) == 8
        assert "at the stop, 8 trainable parameters in no optimizer param group yet" in proc.stderr
    if kind == "rl-few-signal":
        assert "7 of 10 steps (70%)" in f[kind]["evidence"]


def test_three_trainers_each_judged_alone(tmp_path_factory):
    """A broken Trainer, then two healthy ones with the same parameter names: under raise the broken one stops
    the script at its third step; under warn each model gets its own verdict. Then the reverse order of issue 31:
    a stuck bf16 model after a healthy one, and a warmup longer than the run after them."""
    runs = run_all(tmp_path_factory, {
        "raise": ([MULTI, "--runs", "alpha0,healthy,healthy", "--out", "{tmp}"], RAISE),
        "warn": ([MULTI, "--runs", "alpha0,healthy,healthy", "--out", "{tmp}"], []),
        "reverse": ([MULTI, "--runs", "healthy,bf16,warmup,lr0", "--out", "{tmp}"], []),
    })
    proc, summary = runs["raise"]
    assert proc.returncode == STOPPED_EXIT and "run 0 (alpha0) finished" not in proc.stdout
    assert "stopping at step 3 (--policy raise): the gradient was exactly zero everywhere" in proc.stderr
    assert "(Trainer #1)" in proc.stderr
    proc, summary = runs["warn"]
    assert proc.returncode == 0 and "all runs finished" in proc.stdout
    assert set(open_findings(summary, "Trainer #1")) >= {"zero-everywhere"}
    assert open_findings(summary, "Trainer #2") == {} and open_findings(summary, "Trainer #3") == {}
    assert [m["first_step"] for m in summary["processes"][0]["models"]] == [1, 1, 1]  # steps restart per Trainer
    proc, summary = runs["reverse"]
    assert proc.returncode == 0
    assert open_findings(summary, "Trainer #1") == {}
    assert set(open_findings(summary, "Trainer #2")) == {"never-changed"}
    assert all("norm" in n for n in open_findings(summary, "Trainer #2")["never-changed"]["names"])
    assert "lr-tiny" in open_findings(summary, "Trainer #3")  # (its tiniest updates may also round away in fp32)
    assert "a warmup of 100000 steps, longer than the run (6 steps)" in open_findings(summary, "Trainer #3")[
        "lr-tiny"]["cause"]
    assert set(open_findings(summary, "Trainer #4")) == {"lr-zero"}
    assert summary["verdict"] == "findings"


TRL_HEALTHY = {
    "grpo-groups-of-4": (["--trainer", "grpo", "--steps", "6"]),
    "dpo": (["--trainer", "dpo", "--steps", "6"]),
    "kto": (["--trainer", "kto", "--steps", "6"]),
    "sft": (["--trainer", "sft", "--steps", "6"]),
}
TRL_BROKEN = {
    # name -> (arguments, finding kind, confirmed at, words of the cause)
    "grpo-most-groups-equal": (["--trainer", "grpo", "--reward", "any-even", "--num-generations", "2", "--steps",
                                "6"], "rl-few-signal", "end", "zero advantage"),
    "dpo-chosen-equals-rejected": (["--trainer", "dpo", "--identical", "--steps", "6"], "loss-flat", 5, "log 2"),
    "kto-beta-0": (["--trainer", "kto", "--beta", "0", "--steps", "6"], "zero-everywhere", 3, "beta=0"),
    "sft-lora-alpha-0": (["--trainer", "sft", "--lora-alpha", "0", "--steps", "6"], "zero-everywhere", 3,
                         "lora_alpha=0"),
}


@pytest.fixture(scope="module")
def trl_runs(tmp_path_factory):
    pytest.importorskip("trl")
    todo = {name: ([TRL, *args, "--out", "{tmp}"], RAISE) for name, args in TRL_HEALTHY.items()}
    todo.update({name: ([TRL, *v[0], "--out", "{tmp}"], RAISE) for name, v in TRL_BROKEN.items()})
    return run_all(tmp_path_factory, todo)


@pytest.mark.parametrize("variant", list(TRL_HEALTHY))
def test_trl_healthy_variants(trl_runs, variant):
    proc, summary = trl_runs[variant]
    assert proc.returncode == 0 and "training finished" in proc.stdout, proc.stderr[-3000:]
    assert summary["verdict"] == "healthy" and open_findings(summary) == {}


@pytest.mark.parametrize("variant", list(TRL_BROKEN))
def test_trl_broken_variants(trl_runs, variant):
    _, kind, step, cause = TRL_BROKEN[variant]
    proc, summary = trl_runs[variant]
    assert proc.returncode == STOPPED_EXIT and "training finished" not in proc.stdout, proc.stderr[-3000:]
    f = open_findings(summary)
    assert kind in f and f[kind]["confirmed_at"] == step, f
    assert cause in f[kind]["cause"]
    where = f"step {step}" if step != "end" else "the end of "
    assert f"stopping at {where}" in proc.stderr
    if variant == "dpo-chosen-equals-rejected":
        assert "loss-log2" in f[kind]["signs"] and "trl-dpo-prompt-fills-max-length" in f[kind]["cases"]


def test_no_message_has_an_empty_field(runs, trl_runs):
    # issue 32: every line watch printed in the runs above (each kind of finding, its stop, its closing line,
    # the per-model summary), rendered with the values of a real run, has every field filled
    bad = {name: empty_fields(proc.stderr, PREFIX) for name, (proc, _) in {**runs, **trl_runs}.items()}
    assert not {name: lines for name, lines in bad.items() if lines}, bad
