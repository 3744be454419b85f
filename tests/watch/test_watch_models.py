"""`benchsuite watch`, third round (issue 31): the loss, the learning rate, RL steps without signal, several models
in one process, and the exit code of a run caught at its end. Every script runs unmodified. Each process pays the
imports of torch, transformers and peft (most of a test's time), so the variants run in turn in a few processes
(watch_scripts/in_turn.py), as a sweep trains them, and each is judged on its own model: the healthy ones under
--policy raise (each ends with no finding and no stop), the broken ones under warn (each model's finding, with its
cause named) or, where a stop or the process's exit code is what is proved, under --policy raise in a process of their
own."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import in_turn_runs
import pytest
from in_turn_runs import in_turn
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


def variant_of(result, names: list[str], name: str, finished: bool = True):
    return in_turn_runs.variant_of(*result, names, name, finished)


RAISE = ["--policy", "raise"]
STOP = STOPPED_EXIT  # watch stopped the run (issue 32)
HAS_TRL = importlib.util.find_spec("trl") is not None

# name -> script and arguments; the variants run in turn in one process under --policy raise (any stop fails them)
HEALTHY = {
    "lr-decays-to-zero-cosine": [LOOP, "--schedule", "cosine", "--steps", "8"],
    "warmup-of-two-steps-linear-decay": [LOOP, "--warmup", "2", "--schedule", "linear", "--steps", "8"],
    "torch-warmup-stepped-per-step": [LOOP, "--schedule", "torch-warmup", "--warmup", "2", "--steps", "6"],
    "fp16-autocast-with-gradscaler": [LOOP, "--amp", "float16", "--steps", "6"],
    "bf16-autocast": [LOOP, "--amp", "bfloat16", "--steps", "6"],
    "regression-lr-ok": [REGRESS, "--lr", "0.01"],
    # --rl is the whole process's: run in turn with the RL loop that is broken under --rl (RL_GROUP)
    "rl-loop-some-zero-advantage-steps": [RL, "--equal-at", "2,3,4,7"],
    # a process of three models is what it proves: a process of its own
    "three-trainers-healthy": [MULTI, "--runs", "healthy,healthy,healthy", "--out", "{tmp}"],
}

BROKEN = {
    # name -> (script and arguments, finding kind, confirmed at, words of the cause). The variants of BROKEN_GROUP run
    # in turn in one process under the default policy (warn: each model is reported, none stopped)
    "every-label-masked": ([LOOP, "--mask-labels", "--steps", "6"], "loss-nonfinite", 3,
                           "every label of the batch is -100"),
    "warmup-longer-than-the-run": ([LOOP, "--warmup", "100000", "--schedule", "linear", "--steps", "8"], "lr-tiny", 4,
                                   "a warmup of 100000 steps, longer than the run"),
    "scheduler-stepped-per-epoch": ([LOOP, "--schedule", "torch-warmup", "--warmup", "10", "--sched-every", "100",
                                     "--steps", "8"], "lr-tiny", 3, "stepped per epoch"),
    "lr-too-high-diverges": ([REGRESS, "--lr", "0.5"], "loss-diverging", 8, "learning rate is too high"),
    # 5 steps: the run ends where --policy raise stopped it (under warn a later step with a gradient clears the finding)
    "zero-everywhere-outside-rl": ([RL, "--equal-at", "2,3,4", "--steps", "5"], "zero-everywhere", 5,
                                   "not an RL trainer"),
    # under --rl --policy raise (RL_GROUP): confirmed at the end, too late to stop, so the process exits 3
    "rl-most-steps-without-signal": ([RL, "--equal-at", "0,1,3,4,6,7,9"], "rl-few-signal", "end", "zero advantage"),
    # under --policy raise in a process of its own (what a stop leaves not judged, issue 32): the adapters are in no
    # optimizer and nothing else trains: the loss stays exactly constant, which stops the run at step 5; the
    # parameters in no optimizer are named at its end (6 steps are too few before)
    "optimizer-before-get_peft_model-short": ([LOOP, "--optimizer-before-peft", "--steps", "6"], "loss-flat", 5,
                                              "nothing trains"),
}
HEALTHY_GROUP = [v for v in HEALTHY if v not in ("rl-loop-some-zero-advantage-steps", "three-trainers-healthy")]
RL_GROUP = ["rl-loop-some-zero-advantage-steps", "rl-most-steps-without-signal"]
BROKEN_GROUP = [v for v in BROKEN if v not in (*RL_GROUP, "optimizer-before-get_peft_model-short")]

TRL_HEALTHY = {
    "grpo-groups-of-4": (["--trainer", "grpo", "--steps", "6"]),
    "dpo": (["--trainer", "dpo", "--steps", "6"]),
    "kto": (["--trainer", "kto", "--steps", "6"]),
    "sft": (["--trainer", "sft", "--steps", "6"]),
}
TRL_BROKEN = {
    # name -> (arguments, finding kind, confirmed at, words of the cause). The first is stopped under --policy raise
    # at the end of its training, after the healthy TRL variants in their process; the others run under warn in
    # BROKEN_GROUP's process.
    "grpo-most-groups-equal": (["--trainer", "grpo", "--reward", "any-even", "--num-generations", "2", "--steps",
                                "6"], "rl-few-signal", "end", "zero advantage"),
    "dpo-chosen-equals-rejected": (["--trainer", "dpo", "--identical", "--steps", "6"], "loss-flat", 5, "log 2"),
    "kto-beta-0": (["--trainer", "kto", "--beta", "0", "--steps", "6"], "zero-everywhere", 3, "beta=0"),
    "sft-lora-alpha-0": (["--trainer", "sft", "--lora-alpha", "0", "--steps", "6"], "zero-everywhere", 3,
                         "lora_alpha=0"),
}
TRL_STOPPED = "grpo-most-groups-equal"


def trl(args):
    return [TRL, *args, "--out", "{tmp}"]


# name of a watched process -> {variant: script and arguments} run in turn (a process of one variant runs it alone)
HEALTHY_PROC = {**{v: HEALTHY[v] for v in HEALTHY_GROUP},
                **({v: trl(a) for v, a in TRL_HEALTHY.items()} | {TRL_STOPPED: trl(TRL_BROKEN[TRL_STOPPED][0])}
                   if HAS_TRL else {})}
BROKEN_PROC = {**{v: BROKEN[v][0] for v in BROKEN_GROUP},
               **({v: trl(a[0]) for v, a in TRL_BROKEN.items() if v != TRL_STOPPED} if HAS_TRL else {})}
GROUPS = {"healthy": HEALTHY_PROC, "broken": BROKEN_PROC,
          "rl": {v: HEALTHY[v] if v in HEALTHY else BROKEN[v][0] for v in RL_GROUP}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every watched process of this module, 3 at a time: the variants run in turn where they can (GROUPS), and the
    processes that prove something about a whole process alone."""
    multi = "--out", "{tmp}"
    return run_all(tmp_path_factory, {
        "healthy": (in_turn(HEALTHY_PROC), RAISE),
        "broken": (in_turn(BROKEN_PROC), []),
        "rl": (in_turn(GROUPS["rl"]), ["--rl", *RAISE]),
        "three-trainers-healthy": (HEALTHY["three-trainers-healthy"], RAISE),
        "optimizer-before-get_peft_model-short": (BROKEN["optimizer-before-get_peft_model-short"][0], RAISE),
        # test_three_trainers_each_judged_alone
        "three-raise": ([MULTI, "--runs", "alpha0,healthy,healthy", *multi], RAISE),
        "three-warn": ([MULTI, "--runs", "alpha0,healthy,healthy", *multi], []),
        "three-reverse": ([MULTI, "--runs", "healthy,bf16,warmup,lr0", *multi], []),
    })


def result_of(runs, variant):
    """(the process that ran the variant, its model, its open findings, watch's summary lines about its model);
    model and lines are None for a variant that ran alone."""
    group = next((g for g, names in GROUPS.items() if variant in names), None)
    if group is None:
        proc, summary = runs[variant]
        return proc, summary, None, open_findings(summary), None
    names = list(GROUPS[group])
    m, f, lines = variant_of(runs[group], names, variant, finished=variant != TRL_STOPPED)
    return runs[group][0], runs[group][1], m, f, lines


@pytest.mark.parametrize("variant", list(HEALTHY))
def test_healthy_variants_pass_under_raise(runs, variant):
    proc, summary, m, f, lines = result_of(runs, variant)
    assert f == {} and "WatchProblemError" not in proc.stderr
    if m is None:  # alone: the process exits 0 with no finding
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert summary["verdict"] == "healthy" and "healthy: no finding" in proc.stderr
        models = summary["processes"][0]["models"]
        assert summary["processes"][0]["scans"] >= 6
    else:  # run in turn: its script ran to its end (no stop) and its model has no finding
        assert m["stopped_at"] is None and f"healthy: no finding in {m['scans']} scans" in lines, lines
        models = [m]
    assert all(x["scans"] >= 6 and x["losses"] for x in models)  # the loss was seen at every model
    if variant == "rl-loop-some-zero-advantage-steps":
        assert m["zero_gradient_steps"] == [3, 4, 5, 8] and m["rl"]  # counted, not judged: the script is RL (--rl)
    if variant == "three-trainers-healthy":
        assert [x["label"] for x in models] == ["Trainer #1", "Trainer #2", "Trainer #3"]
        assert "3 models trained in this process, each judged alone" in proc.stderr
        assert "18 optimizer steps (3 models), 18 scanned" in proc.stderr  # not one range: each model starts at 1
        assert proc.stderr.count("healthy: no finding in 6 scans") == 3


@pytest.mark.parametrize("variant", list(BROKEN))
def test_broken_variants_stopped_with_cause(runs, variant):
    _, kind, step, cause = BROKEN[variant]
    proc, summary, m, f, lines = result_of(runs, variant)
    assert kind in f and f[kind]["confirmed_at"] == step, f
    assert cause in f[kind]["cause"]
    if m is None:  # alone under --policy raise: stopped
        assert proc.returncode == STOP, proc.stderr[-3000:]
        assert cause in proc.stderr and f"stopping at step {step} (--policy raise)" in proc.stderr
        m = summary["processes"][0]["models"][0]
    else:
        assert cause in lines and "likely cause" in lines, lines
    if variant in RL_GROUP:  # --policy raise: confirmed at the end, too late to stop it
        assert proc.returncode == 3 and summary["script_exit_code"] == 0, proc.stderr[-3000:]
        assert "exit code 3: the script exited 0" in proc.stderr
    if kind == "loss-nonfinite":
        assert f[kind]["cases"] and "loss-nonfinite" in f[kind]["signs"]
        assert m["losses"][0] == "nan"  # strict JSON; `doctor --log` reads it as NaN
    if kind == "lr-tiny":
        assert "lr-zero" in f[kind]["signs"] and "learning rate at most" in f[kind]["evidence"]
    if variant == "optimizer-before-get_peft_model-short":
        # issue 32: after a stop nothing is judged "at the end"; the parameters in no optimizer are named, not judged
        assert "not-in-optimizer" not in f and "never-changed" not in f
        assert m["not_judged"]["step"] == 5 and len(m["not_judged"]["in_no_optimizer"]) == 8
        assert "at the stop, 8 trainable parameters in no optimizer param group yet" in proc.stderr
    if kind == "rl-few-signal":
        assert "7 of 10 steps (70%)" in f[kind]["evidence"]


def test_three_trainers_each_judged_alone(runs):
    """A broken Trainer, then two healthy ones with the same parameter names: under raise the broken one stops
    the script at its third step; under warn each model gets its own verdict. Then the reverse order of issue 31:
    a stuck bf16 model after a healthy one, and a warmup longer than the run after them."""
    runs = {k: runs["three-" + k] for k in ("raise", "warn", "reverse")}
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


@pytest.fixture(scope="module")
def trl_runs(runs):
    pytest.importorskip("trl")
    return runs


@pytest.mark.parametrize("variant", list(TRL_HEALTHY))
def test_trl_healthy_variants(trl_runs, variant):
    proc, summary, m, f, lines = result_of(trl_runs, variant)
    assert "WatchProblemError" not in proc.stderr
    assert f == {} and m["stopped_at"] is None and f"healthy: no finding in {m['scans']} scans" in lines, lines


@pytest.mark.parametrize("variant", list(TRL_BROKEN))
def test_trl_broken_variants(trl_runs, variant):
    _, kind, step, cause = TRL_BROKEN[variant]
    proc, summary, m, f, lines = result_of(trl_runs, variant)
    assert kind in f and f[kind]["confirmed_at"] == step, f
    assert cause in f[kind]["cause"] and cause in lines, lines
    if variant == TRL_STOPPED:  # the last of its process, after the healthy ones (each printed "training finished")
        assert proc.returncode == STOPPED_EXIT, proc.stderr[-3000:]
        assert proc.stdout.count("training finished") == len(TRL_HEALTHY)
        where = f"step {step}" if step != "end" else "the end of "
        assert f"stopping at {where}" in proc.stderr and m["stopped_at"] == step
    if variant == "dpo-chosen-equals-rejected":
        assert "loss-log2" in f[kind]["signs"] and "trl-dpo-prompt-fills-max-length" in f[kind]["cases"]


def test_no_message_has_an_empty_field(runs, trl_runs):
    # issue 32: every line watch printed in the runs above (each kind of finding, its stop, its closing line,
    # the per-model summary), rendered with the values of a real run, has every field filled
    bad = {name: empty_fields(proc.stderr, PREFIX) for name, (proc, _) in runs.items()}
    assert not {name: lines for name, lines in bad.items() if lines}, bad
