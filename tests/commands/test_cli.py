"""The command line as users meet it (issue 21): their own model and paths, bad input, Ctrl-C, leftovers."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixture_cases import write_cases
from strict import strict_loads

CLI = [sys.executable, "-m", "benchsuite"]
FAST_GRID = ["--grid", "checkpointing=off", "--grid", "accumulation=1", "--grid", "precision=fp32",
             "--seq-len", "32", "--batch", "2", "--steps", "1", "--warmup", "0"]





def cli(*args, env=None, timeout=300, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kw)


def one_line_usage_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def usage_error_in_process(capsys, *args) -> str:
    """`benchsuite ARGS` called in this process (no interpreter start-up): exit 2 and one line on stderr."""
    from benchsuite.cli import main
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def save_llama(path: Path, **config) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False)
    cfg.update(config)
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(path)
    return path


def wait_for(pred, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------- 1. bench on the user's own checkpoint

def test_bench_on_a_saved_checkpoint_trains_so_checkpointing_takes_effect(tmp_path):
    # from_pretrained returns an eval-mode model, where transformers skips checkpointing: the benchmark
    # measured no saving at all on users' own models.
    model = save_llama(tmp_path / "llama4", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       vocab_size=2048)
    out = tmp_path / "b.json"
    proc = cli("bench", "--model", model, "--grid", "checkpointing=off,non-reentrant", "--grid", "accumulation=1",
               "--grid", "precision=fp32", "--grid", "adapter=full", "--seq-len", "512", "--batch", "2",
               "--steps", "1", "--warmup", "0", "--json", out)
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(out.read_text())
    ck = next(r for r in doc["results"] if r["checkpointing"] == "non-reentrant")
    assert ck["recompute_observed"] and ck["checkpointing_took_effect"] is True, ck
    assert ck["memory_saved_fraction"] > 0.1, ck
    assert doc["benchsuite_version"] and len(ck["step_times_s"]) == 1 and "step_time_spread_fraction" in ck


# ---------------------------------------------------------------- 4. two writers of one report

def _hammer(path: str, n: int) -> None:
    from benchsuite.harness.report import write_atomic
    for i in range(n):
        write_atomic(path, json.dumps({"writer": os.getpid(), "i": i, "pad": "x" * 2000}))


def test_two_processes_writing_the_same_report_do_not_collide(tmp_path):
    target = tmp_path / "par.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(target), 300)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]  # a fixed <path>.tmp made one of them crash
    assert strict_loads(target.read_text())["i"] == 299
    assert [p.name for p in tmp_path.iterdir()] == ["par.json"]  # no temporary file left


# ---------------------------------------------------------------- 5. --with

def test_two_pins_of_one_package_are_a_usage_error_for_run_and_two_environments_for_matrix():
    line = one_line_usage_error(cli("run", "quick-ok", "--with", "transformers==4.57.6", "--with",
                                    "transformers==5.23.0"))
    assert "two --with values for transformers" in line and "matrix" in line
    from benchsuite.harness.matrix import expand
    assert expand(["transformers==4.57.6", "transformers==5.23.0,4.57.6", "peft==0.17.1"]) == [
        ["transformers==4.57.6", "peft==0.17.1"], ["transformers==5.23.0", "peft==0.17.1"]]


@pytest.mark.network
def test_with_accepts_a_pep508_range_resolved_to_one_release():
    from packaging.specifiers import SpecifierSet

    from benchsuite.harness.envs import parse_pins
    pin = parse_pins(["transformers>=4.57,<5"])["transformers"]
    name, ver = pin.split("==")
    assert name == "transformers" and ver in SpecifierSet(">=4.57,<5") and ver.count(".") == 2
    # a run with a range, in the environment it resolves to: tests/harness/test_harness.py (pinned seed cases)


# ---------------------------------------------------------------- 6. bisect over an undeclared package

def test_bisect_over_a_package_the_case_does_not_declare():
    from benchsuite.harness.bisect import correction, disagreements, verdict
    # fp16-unscale-fp16-grads declares peft<0.12. Bisecting transformers, each probe comes with a
    # contemporaneous peft; its status follows peft, as the declaration says.
    affected = {"peft": "<0.12"}
    seen = {"4.40.2": {"status": "reproduced", "expected": "reproduced", "environment": {"peft": "0.11.1"}},
            "4.46.3": {"status": "not-reproduced", "expected": "not-reproduced", "environment": {"peft": "0.13.2"}},
            "4.57.6": {"status": "not-reproduced", "expected": "not-reproduced", "environment": {"peft": "0.17.1"}}}
    result = {"found": True, "last": "4.40.2", "last_status": "reproduced", "first": "4.46.3",
              "first_status": "not-reproduced"}
    versions = list(seen)
    assert disagreements(affected, "transformers", seen) == []  # was: two false disagreements
    assert correction(affected, "transformers", result, seen, versions[0], versions[-1]) is None  # was "<4.46.3"
    code, lines = verdict("fp16-unscale-fp16-grads", affected, "transformers", result, seen, versions)
    assert code == 0 and "agrees" in lines[-1]
    # A probe that contradicts the declaration: exit 1, and no guessed range for a package not declared.
    seen["4.57.6"] = {"status": "reproduced", "expected": "not-reproduced", "environment": {"peft": "0.17.1"}}
    code, lines = verdict("fp16-unscale-fp16-grads", affected, "transformers", result, seen, versions)
    assert code == 1 and any("4.57.6: reproduced but declared not affected (with peft 0.17.1)" in x for x in lines)
    assert "no transformers range suggested" in "\n".join(lines)
    # The package the case does declare: a contradiction is an exit 1 with a suggested range.
    seen = {"4.30.0": {"status": "reproduced"}, "4.57.6": {"status": "reproduced"},
            "5.0.0": {"status": "not-reproduced"}}
    result = {"found": True, "last": "4.57.6", "last_status": "reproduced", "first": "5.0.0",
              "first_status": "not-reproduced"}
    code, lines = verdict("x", {"transformers": ">=4.35,<5"}, "transformers", result, seen, list(seen))
    assert code == 1 and "'<5.0.0'" in lines[1]


# ---------------------------------------------------------------- 7. run --model

def test_run_with_a_healthy_non_chatglm_checkpoint_skips_chatglm_only_cases(tmp_path):
    model = save_llama(tmp_path / "llama")
    out = tmp_path / "r.json"
    proc = cli("run", "chatglm-seqcls-output-attentions", "lora-loaded-frozen", "--model", model, "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = {r["id"]: r for r in strict_loads(out.read_text())["results"]}
    glm = res["chatglm-seqcls-output-attentions"]
    assert glm["status"] == "skipped" and "chatglm" in glm["reason"] and "llama" in glm["reason"]
    assert res["lora-loaded-frozen"]["status"] == "reproduced"


def test_run_with_a_wrong_model_path_is_a_usage_error_up_front(tmp_path, capsys):
    line = one_line_usage_error(cli("run", "--model", tmp_path / "nope", "--json", tmp_path / "r.json"))
    assert "no such folder" in line and not (tmp_path / "r.json").exists()
    (tmp_path / "empty").mkdir()
    assert "no config.json" in usage_error_in_process(capsys, "run", "--model", tmp_path / "empty")
    assert "no such folder" in usage_error_in_process(capsys, "bench", "--model", "meta-llama/Llama-2-7b")


# ---------------------------------------------------------------- 8. usage errors: exit 2, one line, at once

@pytest.mark.parametrize("args, says", [
    (["bench", "--grid", "precision=fp8"], "unknown precision 'fp8'"),
    (["bench", "--grid", "accumulation=two"], "whole numbers"),
    (["bench", "--grid", "accumulation=0"], "whole numbers"),
    (["bench", "--grid", "accumulation=3"], "cannot be split"),
    (["bench", "--device", "cuda"], "no CUDA device"),
    (["scan-bench", "--dtypes", "fp8"], "unknown dtype 'fp8'"),
    (["scan-bench", "--device", "cuda"], "no CUDA device"),
    (["bisect", "lora-loaded-frozen", "--package", "transformers", "--from", "banana"], "not a version"),
    (["run", "--with", "transformers=4.57.6"], "NAME==VERSION"),
    (["run", "--with", "transformers"], "give a version"),
    (["matrix", "--with", "transformers==4.57.6,banana"], "not a version"),
    (["list", "--cases-dir", "/no/such/folder"], "no such folder"),
    (["run", "--cases-dir", "/no/such/folder"], "no such folder"),
    (["run", "--timeout", "0"], "must be positive"),
    (["run", "-k", "no-case-has-this-in-its-id"], "no case matches"),
])
def test_usage_errors_exit_2_with_one_line(args, says, capsys):
    if "--device" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is visible")
    assert says in usage_error_in_process(capsys, *args)


def test_usage_errors_from_the_command_line():
    assert "NAME==VERSION" in one_line_usage_error(cli("run", "--with", "transformers=4.57.6", timeout=60))
    assert "not a version" in one_line_usage_error(cli("bisect", "lora-loaded-frozen", "--package", "transformers",
                                                       "--from", "banana", timeout=60))


def test_unwritable_outputs_are_found_before_the_grid(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for opt in ("--plot", "--markdown", "--json"):
        t0 = time.time()
        line = usage_error_in_process(capsys, "bench", *FAST_GRID, opt, blocker / "sub" / "out.x")
        assert "is not a folder" in line and time.time() - t0 < 5
    # A missing folder that can be made is made (before the work, not after it).
    proc = cli("run", "--cases-dir", write_cases(tmp_path / "cases", ["quick-ok"]), "--json",
               tmp_path / "new" / "deeper" / "r.json")
    assert proc.returncode == 0 and (tmp_path / "new" / "deeper" / "r.json").exists()


def test_a_closed_pipe_ends_quietly():
    r, w = os.pipe()
    os.close(r)  # `benchsuite list --json | head -0`: the reader is gone before anything is written
    proc = subprocess.run(CLI + ["list", "--json"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


# ---------------------------------------------------------------- 9. Ctrl-C keeps what finished

def _interrupt_when(proc, pred, settle=0.5):
    try:
        wait_for(pred)
        time.sleep(settle)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=60)


def test_ctrl_c_in_run_prints_the_table_of_finished_cases(tmp_path):
    cases = write_cases(tmp_path / "cases", ["quick-ok", "hangs"])
    out = tmp_path / "r.json"
    proc = subprocess.Popen(CLI + ["run", "--cases-dir", str(cases), "--json", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    stdout, stderr = _interrupt_when(proc, lambda: "quick-ok" in out.read_text())
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "quick-ok" in stdout and "reproduced" in stdout and "(interrupted)" in stdout


def test_ctrl_c_in_matrix_keeps_finished_cases_of_the_environment_in_progress(tmp_path):
    cases = write_cases(tmp_path / "cases", ["quick-ok", "hangs"])
    out = tmp_path / "m.json"
    proc = subprocess.Popen(CLI + ["matrix", "--cases-dir", str(cases), "--json", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    stdout, stderr = _interrupt_when(proc, lambda: "quick-ok" in out.read_text())
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    doc = strict_loads(out.read_text())
    assert [c["case"] for c in doc["cells"]] == ["quick-ok"] and doc["interrupted"] and doc["kind"] == "matrix"
    assert "[env 1/1 current] [1/2] ok quick-ok" in stderr  # progress per case


def test_ctrl_c_in_bench_writes_table_and_plot_for_finished_configurations(tmp_path):
    out, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    proc = subprocess.Popen(CLI + ["bench", "--grid", "checkpointing=off", "--grid", "accumulation=1",
                                   "--grid", "precision=fp32,fp16", "--grid", "adapter=lora", "--seq-len", "32",
                                   "--batch", "2", "--steps", "5", "--warmup", "0", "--json", str(out),
                                   "--markdown", str(md), "--plot", str(png)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # The fp32 configuration finishes; the fp16 one (no fast CPU kernels: many times slower) is interrupted.
    stdout, stderr = _interrupt_when(proc, lambda: len(strict_loads(out.read_text())["results"]) == 1, settle=0.2)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "ckpt-off/acc1/fp32/lora" in md.read_text() and "ckpt-off/acc1/fp16/lora" not in md.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert strict_loads(out.read_text())["interrupted"] is True


# ---------------------------------------------------------------- 10. nothing left behind

def test_runs_leave_nothing_in_tmpdir_even_when_a_case_is_killed(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")  # the tests' own (conftest): here the commands must keep it
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cases = write_cases(tmp_path / "cases", ["quick-ok", "hangs"])
    proc = cli("run", "--cases-dir", cases, "--timeout", "4", env={"TMPDIR": str(tmp)})
    assert proc.returncode == 1 and "hangs" in proc.stdout  # the timeout disagrees
    assert list(tmp.iterdir()) == []
    proc = cli("matrix", "quick-ok", "--cases-dir", cases, env={"TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    assert list(tmp.iterdir()) == []  # bench's own: tests/bench/test_bench.py::test_small_real_grid


@pytest.mark.network
def test_a_failed_environment_build_leaves_no_cache_folder(tmp_path):
    cache = tmp_path / "cache"
    proc = cli("run", "lora-loaded-frozen", "--with", "transformers==0.0.0.404", env={"BENCHSUITE_CACHE": str(cache)})
    assert proc.returncode == 1 and "could not be built" in proc.stderr
    assert not (cache / "envs").exists() or list((cache / "envs").iterdir()) == []


# ---------------------------------------------------------------- what users expect from their tools

def test_selection_maxfail_last_failed_counts_and_stable_order(tmp_path, capsys):
    from benchsuite.cli import main
    cases = write_cases(tmp_path / "cases", ["quick-ok", "quick-wrong", "hangs"])
    assert main(["list", "--cases-dir", str(cases), "--tag", "fast", "-k", "ok"]) == 0
    listed = capsys.readouterr().out
    assert "quick-ok" in listed and "quick-wrong" not in listed and "1 case(s)" in listed
    out = tmp_path / "r.json"
    proc = cli("run", "--cases-dir", cases, "--tag", "fast", "--json", out, "--jobs", "1")
    assert proc.returncode == 1
    assert [r["id"] for r in strict_loads(out.read_text())["results"]] == ["quick-ok", "quick-wrong"]
    assert proc.stdout.strip().splitlines()[-1].startswith("1 as declared, 1 not in ")
    proc = cli("run", "--cases-dir", cases, "--last-failed", out, "--json", "-")
    doc = strict_loads(proc.stdout)
    assert doc["benchsuite_version"] and doc["kind"] == "run"
    assert [r["id"] for r in doc["results"]] == ["quick-wrong"]
    proc = cli("run", "--cases-dir", cases, "-x", "--jobs", "1", "--timeout", "3", "--json", tmp_path / "x.json")
    assert proc.returncode == 1 and "(--maxfail 1);" in proc.stderr and "case(s) not run" in proc.stderr
    ran = [r["id"] for r in strict_loads((tmp_path / "x.json").read_text())["results"]]
    assert ran[0] == "hangs" and len(ran) < 3  # stopped at the first disagreement (a timeout)


def test_compare_two_runs_and_two_benches(tmp_path):
    a = {"kind": "run", "summary": {}, "results": [
        {"id": "c1", "status": "reproduced", "expected": "reproduced", "fixes": [{"name": "f", "works": True}]},
        {"id": "c2", "status": "not-reproduced", "expected": "not-reproduced"}]}
    b = {"kind": "run", "summary": {}, "results": [
        {"id": "c1", "status": "reproduced", "expected": "reproduced", "fixes": [{"name": "f", "works": False}]},
        {"id": "c2", "status": "reproduced", "expected": "not-reproduced"}]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    proc = cli("compare", tmp_path / "a.json", tmp_path / "b.json")
    assert proc.returncode == 1
    assert "c2: status not-reproduced (expected not-reproduced) -> reproduced (expected not-reproduced) WORSE" \
        in proc.stdout and "c1 fix f: works True -> False" in proc.stdout
    assert cli("compare", tmp_path / "a.json", tmp_path / "a.json").returncode == 0
    row = dict(checkpointing="off", accumulation=1, precision="fp32", adapter="full", status="ok",
               peak_memory_bytes=100 * 2**20, step_time_s=1.0, tokens_per_s=100.0)
    bench = lambda **kw: {"kind": "bench", "grid": {}, "results": [{**row, **kw}]}  # noqa: E731
    (tmp_path / "x.json").write_text(json.dumps(bench()))
    (tmp_path / "y.json").write_text(json.dumps(bench(step_time_s=1.05, peak_memory_bytes=150 * 2**20)))
    proc = cli("compare", tmp_path / "x.json", tmp_path / "y.json", "--threshold", "0.1")
    assert proc.returncode == 1 and "peak memory 100.0 -> 150.0 MiB (+50%) WORSE" in proc.stdout
    assert "step time" not in proc.stdout  # 5% is under the threshold
    # A configuration whose gradients stop matching its baseline is a regression, named with its worst parameter.
    grads = lambda ok, err: {"baseline": "off/acc1/fp32", "matches": ok, "min_cosine": 1.0, "max_rel_error": err,  # noqa: E731
                             "worst": "model.embed_tokens.weight", "no_grad_mismatch": []}
    (tmp_path / "g1.json").write_text(json.dumps(bench(gradients=grads(True, 1e-7))))
    (tmp_path / "g2.json").write_text(json.dumps(bench(gradients=grads(False, 0.32))))
    proc = cli("compare", tmp_path / "g1.json", tmp_path / "g2.json")
    assert proc.returncode == 1 and ("gradients match the baseline True -> False (worst model.embed_tokens.weight, "
                                     "relative error 0.32) WORSE") in proc.stdout, proc.stdout
    usage = one_line_usage_error(cli("compare", tmp_path / "a.json", tmp_path / "x.json"))
    assert "compare two of the same kind" in usage


def test_cache_list_and_prune(tmp_path):
    cache = tmp_path / "cache"
    (cache / "envs" / "0123456789abcdef").mkdir(parents=True)  # an unfinished build
    proc = cli("cache", "list", env={"BENCHSUITE_CACHE": str(cache)})
    assert proc.returncode == 0 and str(cache) in proc.stdout and "(unfinished)" in proc.stdout
    proc = cli("cache", "prune", env={"BENCHSUITE_CACHE": str(cache)})
    assert proc.returncode == 0 and "pruned 1 entry" in proc.stdout
    assert list((cache / "envs").iterdir()) == []


def test_version_and_help_on_every_option():
    assert cli("--version").stdout.startswith("benchsuite ")
    from benchsuite.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, p in sub.choices.items()
               for a in p._actions if a.help is None and a.dest != "help"]
    assert missing == []
