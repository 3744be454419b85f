"""`benchsuite watch` on unmodified scripts, as a user runs them.

Every healthy variant must end with no finding and no stop under --policy raise (a false alarm stops a
healthy run); every broken one must be stopped, or reported, with its cause named. Each process pays the imports of
torch, transformers and peft (most of a test's time), so the variants run in turn in a few processes
(watch_scripts/in_turn.py), as a sweep trains them, each judged on its own model; what is about a whole process (a
stop, an exit code, a crash, torchrun) runs in a process of its own.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import in_turn_runs
import pytest
from in_turn_runs import in_turn

from benchsuite.gradscan import ParamRecord
from benchsuite.gradscan import verdicts as V
from benchsuite.watch.names import compact, group
from benchsuite.watch.stop import STOPPED_EXIT

SCRIPTS = Path(__file__).parent.parent / "watch_scripts"
CLI = [sys.executable, "-m", "benchsuite", "watch"]
LOOP = str(SCRIPTS / "plain_loop.py")
TRAINER = str(SCRIPTS / "trainer_lora.py")
RL = str(SCRIPTS / "rl_loop.py")
DDP = str(SCRIPTS / "ddp_loop.py")
TORCHRUN = ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
RAISE = ["--policy", "raise"]


def watch(tmp_path, *script_args, options=(), timeout=300, log=True, env=None):
    out = tmp_path / "watch.json"
    cmd = CLI + ["--json", str(out), *(["--log", str(tmp_path / "steps.jsonl")] if log else []), *options, "--",
                 sys.executable, *script_args]
    # TMPDIR in the test's folder: torchrun, run by some scripts as a user would, leaves its torchelastic_*
    # log folder there.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(tmp_path), **(env or {})})
    return proc, json.loads(out.read_text())


def watch_all(tmp_path_factory, runs: dict, jobs: int = 3) -> dict:
    """Independent single-process watched runs, `jobs` at a time (each is mostly one core's start-up and
    imports): name -> (folder, (process, summary)). `runs`: name -> (script args with {tmp} for an output
    folder, watch options)."""
    folders = {name: tmp_path_factory.mktemp(name[:40]) for name in runs}

    def one(name):
        args, options = runs[name]
        folder = folders[name]
        return watch(folder, *[a.replace("{tmp}", str(folder / "out")) for a in args], options=options,
                     env={"OMP_NUM_THREADS": "1"})
    with ThreadPoolExecutor(jobs) as pool:
        done = {name: pool.submit(one, name) for name in runs}
        return {name: (folders[name], f.result()) for name, f in done.items()}


def findings(summary, rank=0, status="open"):
    proc = next(p for p in summary["processes"] if p["rank"] == rank)
    return {f["kind"]: f for f in proc["findings"] if f["status"] == status}


def steps_log(tmp_path, name="steps.jsonl"):
    return [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]


def variant_of(run, names: list[str], name: str):
    """in_turn_runs.variant_of for a run of watch_all: (its model, its open findings, its summary lines, its
    step-log lines)."""
    folder, (proc, summary) = run
    m, f, lines = in_turn_runs.variant_of(proc, summary, names, name)
    return m, f, lines, [ln for ln in steps_log(folder) if ln["model"] == m["label"]]


# ---------------------------------------------------------------- healthy runs: no false alarm

HEALTHY = {
    "warmup-cosine-weight-decay-accum-non-reentrant": [LOOP, "--lr", "2e-5", "--warmup", "2", "--schedule", "cosine",
                                                       "--weight-decay", "0.001", "--steps", "6", "--accum", "2",
                                                       "--ckpt", "non-reentrant"],
    "warmup-linear-sgd": [LOOP, "--optimizer", "sgd", "--lr", "0.05", "--warmup", "3", "--schedule", "linear",
                          "--steps", "6"],
    "lora-on-embeddings-dora": [LOOP, "--lora-embed", "--use-dora", "--steps", "6"],
    "resumed-adapter-reentrant-with-input-hook": [LOOP, "--resume", "--ckpt", "reentrant"],
    "full-fine-tune": [LOOP, "--full"],
    "rl-zero-advantage-steps": [RL, "--equal-at", "2,9"],
    "reward-model-pairwise-loss-head-bias": [str(SCRIPTS / "reward_loop.py"), "--lora"],
    "gan-two-optimizers-one-module": [str(SCRIPTS / "gan_loop.py")],
    "trainer-causal-warmup-cosine-accum": [TRAINER, "--out", "{tmp}", "--task", "causal", "--lr", "2e-5",
                                           "--warmup-steps", "2", "--scheduler", "cosine", "--weight-decay", "0.001",
                                           "--accum", "2", "--steps", "5"],
}


TRL_TESTED = ["grpo"]  # also runs with "sft" and "dpo"
TRL_TRAINERS = TRL_TESTED if importlib.util.find_spec("trl") else []
# the variants run in turn in one process under --policy raise; the TRL ones first of the Trainers (their labels)
HEALTHY_PROC = {**{v: a for v, a in HEALTHY.items() if v != "trainer-causal-warmup-cosine-accum"},
                **{f"trl-{t}": [str(SCRIPTS / "trl_trainers.py"), "--trainer", t, "--out", "{tmp}"]
                   for t in TRL_TRAINERS},
                "trainer-causal-warmup-cosine-accum": HEALTHY["trainer-causal-warmup-cosine-accum"]}


@pytest.mark.parametrize("variant", list(HEALTHY))
def test_healthy_runs_pass_under_raise(runs, variant):
    proc = runs["healthy"][1][0]
    m, f, lines, log = variant_of(runs["healthy"], list(HEALTHY_PROC), variant)
    # its script ran to its end under --policy raise (not stopped) and its model has no finding
    assert f == {} and m["stopped_at"] is None and "WatchProblemError" not in proc.stderr
    assert f"healthy: no finding in {m['scans']} scans" in lines, lines
    assert m["scans"] == m["optimizer_steps"] == len(log) >= 4
    if variant == "gan-two-optimizers-one-module":  # each optimizer judges its own parameters at its steps
        assert [ln["step"] for ln in log][:7] == [1, 2, 3, 4, 5, 1, 6]
        assert {(ln["scanned"], ln["trainable"], ln["in_optimizers"]) for ln in log} == {(4, 8, 4), (4, 8, 8)}
        return
    assert [ln["step"] for ln in log] == list(range(1, len(log) + 1))  # as the Trainer numbers its steps
    assert all(ln["scanned"] == ln["trainable"] == ln["in_optimizers"] > 0 for ln in log)
    if variant == "rl-zero-advantage-steps":
        assert m["zero_gradient_steps"] == [3, 10]
        assert "2 steps with a gradient of exactly zero everywhere" in lines


@pytest.mark.parametrize("trainer", TRL_TESTED)
def test_trl_trainers_healthy_under_raise(runs, trainer):
    pytest.importorskip("trl")
    proc, summary = runs["healthy"][1]
    m, f, lines, _ = variant_of(runs["healthy"], list(HEALTHY_PROC), f"trl-{trainer}")
    assert "training finished" in proc.stdout and "WatchProblemError" not in proc.stderr
    assert f == {} and m["stopped_at"] is None and "healthy: no finding in 4 scans" in lines, lines
    p = summary["processes"][0]
    # every Trainer the process made trained one model (it made one per script)
    assert p["trainers"] == len([x for x in p["models"] if x["trainer_class"]])
    assert m["scans"] == 4 and m["params"]["trainable"] == 8
    # GRPO is recognised as RL: a step with zero advantage everywhere would be counted, not judged (issue 31)
    assert m["rl"] is True and m["label"] == "GRPOTrainer #1"


def test_ddp_two_ranks_healthy_then_nan_on_one_rank(tmp_path):
    proc, summary = watch(tmp_path, *TORCHRUN, DDP, "--nan-at", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p["rank"] for p in summary["processes"]) == [0, 1]
    nf = findings(summary, rank=1)["non-finite"]
    assert nf["since_step"] == 3 and "module.2.weight" in nf["names"]
    assert findings(summary, rank=0)["non-finite"]["since_step"] == 4  # reached rank 0 by the next all-reduce
    assert "replicas-differ" not in findings(summary, rank=0)
    assert (tmp_path / "steps.rank1.jsonl").exists()


# ---------------------------------------------------------------- broken runs: stopped, cause named

def test_reentrant_lora_without_input_hook_stopped_under_raise(runs):
    tmp_path, (proc, summary) = runs["reentrant"]
    assert proc.returncode == STOPPED_EXIT and "training finished" not in proc.stdout
    f = findings(summary)
    assert set(f) == {"no-gradient"}  # the score head trains: that is why the Trainer's grad_norm looks healthy
    f = f["no-gradient"]
    assert f["count"] == 8 and all("lora_" in n for n in f["names"]) and f["confirmed_at"] == 3
    assert f["since_step"] == 1
    assert "stopping at step 3 (--policy raise): no gradient in 8 parameter(s): " \
           "base_model.model.model.layers.{0-1}.self_attn.{q_proj,v_proj}.{lora_A,lora_B}.default.weight" in proc.stderr
    assert "enable_input_require_grads" in proc.stderr and "list every name" in proc.stderr
    log = steps_log(tmp_path)
    assert [ln["step"] for ln in log] == [1, 2, 3] and log[0]["source"] == "trainer"
    assert log[0]["trainable"] == log[0]["scanned"] == log[0]["in_optimizers"] == 9
    assert log[2]["confirmed"][0]["kind"] == "no-gradient" and log[1]["confirmed"] == []
    # the finding names its catalogue case and the case's verified fix (benchsuite/catalogue.py, as doctor does)
    seed = "reentrant-checkpoint-frozen-inputs"
    assert f"no gradient -> {seed}" in proc.stderr
    assert "fix: model.enable_input_require_grads() after enabling checkpointing (verified: worked with" in proc.stderr
    assert summary["processes"][0]["versions"]["transformers"]  # the watched process's versions
    assert summary["known_cases"][0]["cases"][0]["id"] == seed


BROKEN = [
    # nothing else trains, so the loss stays exactly constant: confirmed at step 5 (issue 31), before the parameters
    # in no optimizer are (step 10)
    ("optimizer-before-get_peft_model", ["--optimizer-before-peft", "--steps", "12"], "loss-flat", 5,
     "nothing trains"),
    ("full-fine-tune-lr-0", ["--full", "--lr", "0"], "lr-zero", 3, "learning rate was 0"),
    ("bf16-weights-updates-round-away", ["--full", "--dtype", "bfloat16", "--lr", "2e-5"], "never-changed", 4,
     "resolution of bfloat16"),
    ("nan-gradient", ["--nan-at", "2"], "non-finite", 3, "NaN/Inf"),
    ("lora-alpha-0-head-trains", ["--lora-alpha", "0", "--train-head"], "all-zero", 3, "lora_alpha=0"),
]


# the broken variants run in turn in one process under the default policy (warn): each model is reported, none
# stopped (a stop is tested in processes of its own: the reentrant run above and issue 32's below)
BROKEN_PROC = {**{v: [LOOP, "--steps", "6", *args] for v, args, *_ in BROKEN},
               "lora-alpha-0-alone": [LOOP, "--lora-alpha", "0", "--steps", "6"],
               "adapters-loaded-frozen": [LOOP, "--frozen"]}
NAN_AT_STEP_2 = [LOOP, "--nan-at", "1", "--steps", "6"]  # the loop counts from 0: its second optimizer step


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every single-machine watched process of this module, 3 at a time: the variants run in turn where they can,
    and the processes that prove something about a whole process (a stop, an exit code) alone."""
    return watch_all(tmp_path_factory, {
        "healthy": (in_turn(HEALTHY_PROC), RAISE),
        "broken": (in_turn(BROKEN_PROC), []),
        "reentrant": ([TRAINER, "--out", "{tmp}", "--broken", "--steps", "6"], RAISE),
        "end": ([LOOP, "--lora-alpha", "0", "--steps", "2"], RAISE),
        "stop-plain": (NAN_AT_STEP_2, RAISE),
        "stop-traceback": (NAN_AT_STEP_2, [*RAISE, "--traceback"]),
        "stop-caught": ([*NAN_AT_STEP_2, "--catch"], RAISE),
        "crash": ([LOOP, "--crash-before-step"], []),
        "no-such-flag": ([LOOP, "--no-such-flag"], []),
    })


@pytest.mark.parametrize("variant,args,kind,step,cause", BROKEN)
def test_broken_runs_stopped_with_cause(runs, variant, args, kind, step, cause):
    proc = runs["broken"][1][0]
    m, f, lines, _ = variant_of(runs["broken"], list(BROKEN_PROC), variant)
    assert "Traceback" not in proc.stderr and "benchsuite/watch/" not in proc.stderr  # issue 32: no crash look
    assert kind in f and f[kind]["confirmed_at"] == step, f
    # said at that step (where --policy raise stops), about its model (the first model's lines name none: it was the
    # only one yet); its cause named in the summary
    about = f" ({m['label']})" if m["order"] > 1 else ""
    assert f"rank 0 step {step}{about}: " in proc.stderr
    assert cause in f[kind]["cause"] and cause in lines, lines
    if variant == "bf16-weights-updates-round-away":
        assert all("norm" in n for n in f[kind]["names"])  # the matrices move; the norm weights (~1.0) do not
    if variant == "optimizer-before-get_peft_model":  # not stopped: the parameters in no optimizer at step 10
        assert f["not-in-optimizer"]["confirmed_at"] == 10 and f["not-in-optimizer"]["count"] == 8
        assert all("lora_" in n for n in f["not-in-optimizer"]["names"])
    if variant == "lora-alpha-0-head-trains":
        assert all("lora_B" in n for n in f[kind]["names"])  # lora_A is excused: its lora_B is still zero


def test_lora_alpha_0_alone_nothing_trains(runs):
    # Every trainable gradient is zero at every step. Outside RL (where zero advantage could explain a step) that
    # is confirmed like any all-zero gradient, within 3 steps (issue 31); the loss stays exactly constant too.
    m, f, lines, _ = variant_of(runs["broken"], list(BROKEN_PROC), "lora-alpha-0-alone")
    assert runs["broken"][1][0].returncode == 0 and set(f) == {"zero-everywhere", "loss-flat"}, f
    assert f["zero-everywhere"]["confirmed_at"] == 3 and f["loss-flat"]["confirmed_at"] == 5
    assert "lora_alpha=0" in lines
    assert "grad-norm-zero" in f["zero-everywhere"]["signs"] and f["zero-everywhere"]["cases"]


def test_a_finding_confirmed_at_the_end_fails_the_run_under_raise(runs):
    # issue 31: under --policy raise a run whose finding is confirmed only at its end must not exit 0 (a CI
    # gate built on raise would pass it); the script's own exit code is kept in the JSON. Two steps of
    # lora_alpha=0 are too few to confirm anything before the end.
    proc, summary = runs["end"][1]
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert summary["exit_code"] == 3 and summary["script_exit_code"] == 0
    assert "exit code 3: the script exited 0, but findings were confirmed at its end" in proc.stderr


# ---------------------------------------------------------------- issue 32: a stop is watch's, not a crash

def test_a_stop_ends_with_watchs_message_and_exit_code(runs):
    _, (proc, summary) = runs["stop-plain"]
    err = proc.stderr
    assert proc.returncode == STOPPED_EXIT == summary["exit_code"], err[-3000:]
    assert summary["script_exit_code"] == 1 and summary["stopped"] is True
    assert "[benchsuite watch] stopping at step 2 (--policy raise): non-finite gradient values" in err
    assert "the run was stopped by watch, not by an error of the script" in err and "watch --traceback" in err
    assert "Traceback" not in err and "benchsuite/watch/" not in err and "WatchProblemError" not in err
    assert "summary: watch stopped the run at step 2 (--policy raise)" in err
    assert f"exit code {STOPPED_EXIT}: watch stopped the run (--policy raise) at step 2 of rank 0" in err
    # Nothing the stop caused: lora_A had no update to make yet (its lora_B was zero) and the run did not go on.
    assert set(findings(summary)) == {"non-finite"}, findings(summary)
    assert "trainable weights that never changed" not in err
    assert "not judged at the end" in err and "the run was stopped at step 2" in err
    model = summary["processes"][0]["models"][0]
    assert model["stopped_at"] == 2 and model["not_judged"]["step"] == 2
    assert summary["processes"][0]["stopped"]["uncaught"] is True


def test_a_stop_with_traceback_shows_the_scripts_own_frames(runs):
    _, (proc, summary) = runs["stop-traceback"]
    err = proc.stderr
    assert proc.returncode == STOPPED_EXIT, err[-3000:]
    assert "the script's traceback, down to the call that was stopped" in err
    assert 'plain_loop.py", line' in err and "opt.step()" in err
    assert "benchsuite/watch/" not in err and "torch/optim" not in err and "watch --traceback" not in err
    assert "stopping at step 2 (--policy raise)" in err and set(findings(summary)) == {"non-finite"}


def test_a_stop_the_script_catches_is_its_own(runs):
    # WatchProblemError stays an exception raised in the script (a RuntimeError): the script's own try/except
    # catches it and the script ends as it chooses; under raise the finding still fails the run (exit code 3).
    _, (proc, summary) = runs["stop-caught"]
    assert "caught WatchProblemError at step 1; the script ends on its own" in proc.stdout, proc.stderr[-3000:]
    assert "train loop" in proc.stdout
    assert proc.returncode == 3 and summary["script_exit_code"] == 0 and summary["stopped"] is False
    assert "the script caught watch's stop at step 2 (--policy raise) and exited 0" in proc.stderr
    assert "the run was stopped by watch" not in proc.stderr
    assert set(findings(summary)) == {"non-finite"} and "trainable weights that never changed" not in proc.stderr


def test_ddp_stop_on_one_rank_stops_the_job(tmp_path):
    # Rank 1 gets the NaN after the all-reduce: it stops there; torchrun ends the job and exits non-zero; watch
    # exits with its own code.
    proc, summary = watch(tmp_path, *TORCHRUN, DDP, "--nan-at", "2", options=["--policy", "raise"])
    assert proc.returncode == STOPPED_EXIT and summary["stopped"] is True, proc.stderr[-3000:]
    stopped = [p for p in summary["processes"] if (p.get("stopped") or {}).get("uncaught")]
    assert 1 in [p["rank"] for p in stopped] and summary["script_exit_code"] != 0
    assert "stopping at step 3 (--policy raise)" in proc.stderr
    # the stopped rank prints no traceback through the agent (rank 0, ended by torchrun's SIGTERM in its next
    # backward, still shows torch's traceback of that signal)
    assert "optimizer_pre_step" not in proc.stderr and "raise WatchProblemError" not in proc.stderr


def test_adapters_loaded_frozen(runs):
    _, f, _, _ = variant_of(runs["broken"], list(BROKEN_PROC), "adapters-loaded-frozen")
    assert set(f) == {"frozen-adapter"} and f["frozen-adapter"]["confirmed_at"] == 1
    assert all("lora_" in n for n in f["frozen-adapter"]["names"])


def test_ddp_not_wrapped_replicas_differ(tmp_path):
    proc, summary = watch(tmp_path, *TORCHRUN, DDP, "--no-wrap", options=["--policy", "raise"])
    # the stop ended rank 0 and torchrun exited 1 because of it: watch says so with its own code
    assert proc.returncode == STOPPED_EXIT, proc.stderr[-2000:]
    assert "the command exited 1 because of the stop" in proc.stderr
    for rank in (0, 1):
        f = findings(summary, rank=rank)["replicas-differ"]
        assert f["confirmed_at"] == 2 and f["count"] == 4
    assert "not wrapped in DistributedDataParallel" in proc.stderr


# ---------------------------------------------------------------- lifecycle: what watch says when nothing ran

def test_script_dying_before_first_step(runs):
    proc, summary = runs["crash"][1]
    assert proc.returncode == 1 and summary["verdict"] == "no-optimizer-step"
    assert "exited with code 1 before its first optimizer step" in proc.stderr
    assert "its last error: ValueError: the dataset has no 'text' column" in proc.stderr
    assert "healthy" not in proc.stderr and "is the command" not in proc.stderr


def test_script_failing_argument_parsing(runs):
    proc, summary = runs["no-such-flag"][1]
    assert proc.returncode == 2 and summary["verdict"] == "no-optimizer-step" and summary["attached"] == 1
    assert "exited with code 2 before its first optimizer step" in proc.stderr and "healthy" not in proc.stderr


def test_nothing_attached_when_python_ignores_pythonpath(tmp_path):
    proc, summary = watch(tmp_path, "-I", "-c", "print('hi')")
    assert proc.returncode == 0 and summary["verdict"] == "not-attached"
    assert "nothing was watched" in proc.stderr


# ---------------------------------------------------------------- the monitor never harms the run

def test_unusable_output_paths_are_usage_errors_before_the_script_starts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    marker = tmp_path / "started"
    script = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    for option in ("--log", "--json"):
        proc = subprocess.run(CLI + [option, str(blocker / "sub" / "out.json"), *script], capture_output=True,
                              text=True)
        assert proc.returncode == 2 and "benchsuite watch: cannot create the folder" in proc.stderr
        assert "Traceback" not in proc.stderr and not marker.exists()
    out = tmp_path / "new" / "folder" / "steps.jsonl"  # missing parent folders are created
    proc = subprocess.run(CLI + ["--log", str(out), *script], capture_output=True, text=True)
    assert proc.returncode == 0 and marker.exists()


def test_write_failures_during_and_after_the_run_keep_the_scripts_exit_code(tmp_path):
    # /proc accepts no new file, even for root: the step log fails at the first step, the summary at the end.
    script = ("import sys, torch\nm = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
              "for step in range(3):\n    m(torch.randn(2, 4)).sum().backward(); opt.step(); opt.zero_grad()\n"
              "    print('step', step)\nsys.exit(3)\n")
    cmd = CLI + ["--log", "/proc/benchsuite-steps.jsonl", "--json", "/proc/benchsuite-summary.json", "--",
                 sys.executable, "-c", script]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3 and "step 2" in proc.stdout
    assert "cannot write the step log" in proc.stderr and "could not write /proc/benchsuite-summary.json" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_exit_status_of_a_script_ended_by_a_signal(sig):
    code = f"import os, signal; os.kill(os.getpid(), {int(sig)})"
    proc = subprocess.run(CLI + ["--", sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 128 + int(sig)


def test_sigint_sent_to_watch_reaches_the_script(tmp_path):
    ready = tmp_path / "ready"
    code = f"import time; open({str(ready)!r}, 'w').close(); time.sleep(60)"
    proc = subprocess.Popen(CLI + ["--", sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "KeyboardInterrupt" in err


def test_watch_without_command_is_a_usage_error():
    proc = subprocess.run(CLI, capture_output=True, text=True)
    assert proc.returncode == 2 and "give the command" in proc.stderr


# ---------------------------------------------------------------- verdict rules on their own

def _rec(name, grad=None, dtype="float32"):
    """A ParamRecord as the scanner returns it: grad None, 'zero', 'nan' or 'ok'."""
    r = ParamRecord(name=name, dtype=dtype, numel=4, none=grad is None)
    if grad == "zero":
        r.zero = 4
    elif grad == "nan":
        r.nan = 1
    elif grad == "ok":
        r.sumsq, r.absmax = 1.0, 0.5
    return r


def test_tracker_clears_a_finding_whose_evidence_goes_away():
    t = V.Tracker(confirm=3)
    value = {"w": (1.0,)}
    for step in range(1, 5):  # gets gradients at lr > 0 but does not move
        t.observe(step, [_rec("w", "ok")], {"w": 0.1}, set(), lambda names: {n: value[n] for n in names})
        t.evaluate(step)
    assert t.findings[V.UNCHANGED]["w"].confirmed_at == 4 and t.findings[V.UNCHANGED]["w"].cleared_at is None
    value["w"] = (2.0,)
    t.observe(5, [_rec("w", "ok")], {"w": 0.1}, set(), lambda names: {n: value[n] for n in names})
    assert t.evaluate(5) == []
    (entry,) = t.report()
    assert entry["status"] == "cleared" and entry["cleared_at"] == 5 and entry["confirmed_at"] == 4


def test_tracker_isolated_gaps_are_not_findings():
    t = V.Tracker(confirm=3)
    pattern = ["ok", None, "ok", "zero", "ok", None, None, "ok"]  # e.g. an MoE expert that some batches skip
    for step, g in enumerate(pattern, 1):
        t.observe(step, [_rec("expert", g), _rec("other", "ok")], {"expert": 0.1, "other": 0.1}, set(),
                  lambda names, s=step: {n: (s,) for n in names})
        assert t.evaluate(step) == []
    t.finish(lambda names: {n: (99,) for n in names})
    assert t.evaluate("end", final=True) == [] and t.report() == []


def test_tracker_never_once_a_gradient_is_a_finding_at_the_end():
    t = V.Tracker(confirm=3)
    for step in (1, 2):  # too short to confirm during the run
        t.observe(step, [_rec("a", None), _rec("b", "ok")], {"a": 0.1, "b": 0.1}, set(),
                  lambda names, s=step: {n: (s,) for n in names})
        assert t.evaluate(step) == []
    assert t.evaluate("end", final=True) == [(V.NO_GRADIENT, ["a"])]


def test_tracker_zero_everywhere_is_counted_not_judged():
    t = V.Tracker(confirm=3)
    for step in range(1, 6):
        t.observe(step, [_rec("a", "zero"), _rec("b", "zero")], {"a": 0.1, "b": 0.1}, set(), lambda n: {})
        assert t.evaluate(step) == []
    assert t.zero_steps == [1, 2, 3, 4, 5]
    assert t.evaluate("end", final=True) == [(V.NO_SIGNAL, ["(every parameter)"])]


def test_zero_factor_decided_from_state_not_names():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchsuite.gradscan import scan

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"]))
    ids = torch.randint(0, 64, (2, 6))
    model(input_ids=ids, labels=ids).loss.backward()
    report = scan(model)
    excused = {r.name for r in report if r.expected_zero}
    assert report.ok
    # PEFT zeroes lora_B for Linear layers but lora_embedding_A for embeddings: the excused factor differs.
    assert any("q_proj.lora_A" in n for n in excused) and any("lora_embedding_B" in n for n in excused)
    assert not any("lora_B" in n or "lora_embedding_A" in n for n in excused)
    # Conv layers: lora_A is a Conv2d, lora_B a 1x1 Conv2d starting at zero.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 2))
    conv = get_peft_model(net, LoraConfig(r=2, target_modules=["0"]))
    conv(torch.randn(2, 3, 6, 6)).sum().backward()
    rep = scan(conv)
    assert rep.ok and {r.name for r in rep if r.expected_zero} == {"base_model.model.0.lora_A.default.weight"}
    # Both factors at zero: the pair can never train; nothing is excused.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "q_proj.lora_A" in n:
                p.zero_()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    assert any("q_proj.lora" in n for n in scan(model).names("all-zero"))


def test_names_grouped_compactly_and_exactly():
    names = [f"m.layers.{i}.attn.{p}.lora_{f}.default.weight" for i in range(14) for p in ("q_proj", "v_proj")
             for f in "AB"]
    assert compact(names) == "m.layers.{0-13}.attn.{q_proj,v_proj}.{lora_A,lora_B}.default.weight (56)"
    # A pattern never stands for a name that was not in the list.
    assert sorted(c for _, c in group(["a.0.w", "a.1.w", "a.1.b"])) == [1, 2]
    assert compact(["x.0.w", "x.1.w", "x.3.w", "y"], limit=1) == "x.{0-1,3}.w (3); and 1 more"
