"""`benchsuite watch` on unmodified scripts: planted failures found at the right step, healthy runs quiet."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


SCRIPTS = Path(__file__).parent / "watch_scripts"
CLI = [sys.executable, "-m", "benchsuite", "watch"]


def watch(tmp_path, *script_args, options=(), timeout=300):
    out = tmp_path / "watch.json"
    cmd = CLI + ["--json", str(out), "--log", str(tmp_path / "steps.jsonl"), *options, "--", sys.executable,
                 *script_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc, json.loads(out.read_text())


def problems(summary, rank=0):
    proc = next(p for p in summary["processes"] if p["rank"] == rank)
    return {p["kind"]: p for p in proc["problems"]}


def test_trainer_reentrant_lora_without_input_hook(tmp_path):
    proc, summary = watch(tmp_path, str(SCRIPTS / "trainer_seqcls_lora.py"), "--broken", "--out", str(tmp_path))
    assert proc.returncode == 0 and "training finished" in proc.stdout
    found = problems(summary)
    assert found["no-gradient"]["first_step"] == 0
    assert len(found["no-gradient"]["names"]) == 8 and all("lora_" in n for n in found["no-gradient"]["names"])
    assert found["unchanged"]["first_step"] == 2 and any("lora_B" in n for n in found["unchanged"]["names"])
    assert "score" not in " ".join(found["no-gradient"]["names"])  # the head trains: that is why it looks healthy
    assert "rank 0 step 0: no gradient in 8 parameter(s)" in proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [0, 1, 2, 3] and lines[0]["source"] == "trainer"


def test_trainer_healthy_is_quiet(tmp_path):
    proc, summary = watch(tmp_path, str(SCRIPTS / "trainer_seqcls_lora.py"), "--out", str(tmp_path))
    assert proc.returncode == 0
    assert problems(summary) == {}  # lora_A is zero at step 0 by design: not reported
    assert summary["processes"][0]["scans"] == 4
    assert "healthy: no problem found" in proc.stderr


def test_plain_loop_nan_at_step_and_exit_code_untouched(tmp_path):
    proc, summary = watch(tmp_path, str(SCRIPTS / "plain_loop.py"), "--nan-at", "2", "--exit-code", "3")
    assert proc.returncode == 3 and "step 4 loss" in proc.stdout
    nonfinite = problems(summary)["non-finite"]
    assert nonfinite["first_step"] == 2
    assert nonfinite["names"][0] == "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"


def test_plain_loop_healthy_is_quiet(tmp_path):
    proc, summary = watch(tmp_path, str(SCRIPTS / "plain_loop.py"))
    assert proc.returncode == 0 and problems(summary) == {}
    assert summary["processes"][0]["scan_ms_per_step"] > 0


def test_adapters_loaded_frozen(tmp_path):
    proc, summary = watch(tmp_path, str(SCRIPTS / "plain_loop.py"), "--frozen")
    frozen = problems(summary)["frozen-adapter"]
    assert frozen["first_step"] == 0 and all("lora_" in n for n in frozen["names"])
    assert "no-gradient" not in problems(summary)  # requires_grad=False is not a missing gradient


def test_policy_raise_stops_the_run(tmp_path):
    proc, summary = watch(tmp_path, str(SCRIPTS / "plain_loop.py"), "--nan-at", "1", options=["--policy", "raise"])
    assert proc.returncode != 0
    assert "WatchProblemError" in proc.stderr and "step 2 loss" not in proc.stdout
    assert problems(summary)["non-finite"]["first_step"] == 1


def test_torchrun_two_ranks(tmp_path):
    proc, summary = watch(tmp_path, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          str(SCRIPTS / "ddp_loop.py"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p["rank"] for p in summary["processes"]) == [0, 1]
    assert problems(summary, rank=1)["non-finite"]["first_step"] == 2
    assert problems(summary, rank=1)["non-finite"]["names"][0] == "module.2.weight"
    assert problems(summary, rank=0)["non-finite"]["first_step"] == 3  # reached rank 0 by the next all-reduce
    assert (tmp_path / "steps.rank1.jsonl").exists()


def test_watch_without_command_is_a_usage_error():
    proc = subprocess.run(CLI, capture_output=True, text=True)
    assert proc.returncode == 2 and "give the command" in proc.stderr
