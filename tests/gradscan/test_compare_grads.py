"""`benchsuite watch --signature` and `benchsuite compare-grads` on unmodified scripts.

An option that keeps the gradients (non-reentrant checkpointing; accumulation, GradScaler and clipping
that leave the step's gradient as it was) must compare equal; a broken one (reentrant checkpointing of a
LoRA model without the input-grad hook: no gradient reaches the adapters) must be flagged by name.
The watched runs of each group start together (they are independent), to keep the tests' wall time down.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from in_turn_runs import IN_TURN, in_turn

SCRIPTS = Path(__file__).parent.parent / "watch_scripts"
WATCH = [sys.executable, "-m", "benchsuite", "watch"]
COMPARE = [sys.executable, "-m", "benchsuite", "compare-grads"]
TRAINER = str(SCRIPTS / "trainer_lora.py")
LOOP = str(SCRIPTS / "clip_accum_loop.py")


def _start(folder: Path, name: str, script_args, options=(), sig=None):
    """Start one watched run writing its signatures to sig (default folder/name.json); (process, path)."""
    sig = sig or folder / f"{name}.json"
    cmd = WATCH + ["--signature", str(sig), *options, "--", sys.executable, *script_args]
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(folder), "OMP_NUM_THREADS": "1"})
    return proc, sig


def _run_all(folder: Path, runs: dict) -> dict:
    started = {name: _start(folder, name, *spec) for name, spec in runs.items()}
    out = {}
    for name, (proc, sig) in started.items():
        stdout, stderr = proc.communicate(timeout=600)
        out[name] = {"code": proc.returncode, "stdout": stdout, "stderr": stderr, "sig": sig}
    return out


def compare(*args):
    """`benchsuite compare-grads ARGS` in this process (it imports torch, which this process has already):
    a CompletedProcess-like result with its exit code, stdout and stderr."""
    import contextlib
    import io

    from benchsuite.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["compare-grads", *[str(a) for a in args]])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every watched run of this module, started at once (most of their time is imports): the Trainer runs in turn
    in one process and the loops in another, as a sweep trains its variants (a signature file per model)."""
    folder = tmp_path_factory.mktemp("runs")
    (folder / "doomed").mkdir()
    base = [TRAINER, "--steps", "1"]
    out = _run_all(folder, {
        # the three Trainer runs in turn in one process, as a sweep trains them: a signature file per model
        "trainers": ([a.replace("{tmp}", str(folder)) for a in in_turn({
                          "off": base + ["--out", "{tmp}", "--ckpt", "off"],
                          "non-reentrant": base + ["--out", "{tmp}", "--ckpt", "non-reentrant"],
                          "broken": base + ["--out", "{tmp}", "--broken"]})],
                     ["--json", str(folder / "trainers-summary.json")]),
        "loops": (in_turn({"full-clip": [LOOP, "--clip", "0.01"],
                           "accum-scaler-clip": [LOOP, "--clip", "0.01", "--accum", "2", "--scaler"],
                           "full-noclip": [LOOP]}),),
        "full-clip-step2": ([LOOP, "--clip", "0.01"], ["--signature-step", "2"]),
        "unwritable": ([LOOP, "--break-folder", str(folder / "doomed")], ["--json", str(folder / "summary.json")],
                       folder / "doomed" / "sig.json"),
    })
    for proc, names in (("trainers", ("off", "non-reentrant", "broken")),
                        ("loops", ("full-clip", "accum-scaler-clip", "full-noclip"))):
        run = out.pop(proc)
        for k, name in enumerate(names, 1):  # trainers.json, trainers.model2.json, ...
            out[name] = {**run, "sig": folder / (f"{proc}.json" if k == 1 else f"{proc}.model{k}.json")}
    out["folder"] = folder
    return out


def _doc(path):
    return json.loads(Path(path).read_text())


def test_trainer_signature_file(runs):
    r = runs["off"]
    assert r["code"] == 0 and r["stdout"].count("training finished") == 3, r["stderr"][-3000:]
    doc = _doc(r["sig"])
    assert doc["kind"] == "gradient-signatures" and doc["step"] == 1 and doc["source"] == "trainer"
    assert doc["world_size"] == 1 and doc["rank"] == 0 and doc["versions"]["torch"]
    folder = r["sig"].parent
    assert doc["command"][1] == IN_TURN and doc["argv"] == [TRAINER, "--steps", "1", "--out", str(folder / "off"),
                                                            "--ckpt", "off"]  # the watch command; the script's own
    assert doc["trainer_args"]["gradient_accumulation_steps"] == 1
    names = list(doc["signatures"])
    assert len(names) == 9 and any("lora_B" in n for n in names) and any("score" in n for n in names)
    assert doc["dtypes"] == {"parameters": {"float32": 9}, "gradients": {"float32": 9}}
    assert doc["parameters"][names[0]]["shape"] and len(doc["signatures"][names[0]]["proj"]) == 128
    # one file per model, each named in its file, in the summary and on the console
    variants = ("off", "non-reentrant", "broken")
    labels = [_doc(runs[n]["sig"])["model"]["label"] for n in variants]
    assert [_doc(runs[n]["sig"])["model"]["order"] for n in variants] == [1, 2, 3]
    summary = _doc(folder / "trainers-summary.json")["processes"][0]
    assert labels == [m["label"] for m in summary["models"]] and len(set(labels)) == 3
    assert [s["path"] for s in summary["signatures"]] == [str(runs[n]["sig"]) for n in variants]
    assert summary["signature"] == summary["signatures"][0]
    assert f"gradient signatures of step 1, {labels[0]} (9 parameters): {r['sig']}" in r["stderr"]
    assert f"gradient signatures of step 1, {labels[2]} (9 parameters, 8 without a gradient): " \
           f"{runs['broken']['sig']}" in r["stderr"]


def test_non_reentrant_checkpointing_matches(runs):
    a, b = runs["off"]["sig"], runs["non-reentrant"]["sig"]
    proc = compare(a, b)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: MATCH" in proc.stdout and "9 parameters in both" in proc.stdout
    assert f"B: {b} (step 1 of Trainer #2, 9 parameters, " in proc.stdout  # the model of the sweep it came from
    proc = subprocess.run(COMPARE + [str(a), str(b)], capture_output=True, text=True, timeout=300)  # as a command
    assert proc.returncode == 0 and "verdict: MATCH" in proc.stdout, proc.stdout + proc.stderr


def test_reentrant_lora_without_input_hook_differs_by_name(runs, tmp_path):
    r = runs["broken"]
    assert r["code"] == 0, r["stderr"][-3000:]
    out = tmp_path / "cmp.json"
    proc = compare(runs["off"]["sig"], r["sig"], "--json", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # The score head is flagged too (relative error ~2e-3): the Trainer clips to max_grad_norm 1.0, and the total
    # norm it divides by lacks the adapters' gradients here. The signature is the gradient the step sees.
    assert "verdict: DIFFER: 9 of 9 parameters" in proc.stdout
    assert "base_model.model.score.modules_to_save.default.weight: relative error" in proc.stdout
    assert "no gradient in B (8): base_model.model.model.layers.{0-1}.self_attn.{q_proj,v_proj}." \
           "{lora_A,lora_B}.default.weight" in proc.stdout
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight: no gradient in run_b" in proc.stdout
    doc = _doc(out)
    assert doc["kind"] == "compare-grads" and doc["verdict"] == "differ" and not doc["matches"]
    assert len(doc["no_grad_mismatch"]) == 8 and len(doc["records"]) == 9
    assert all("lora_" in n for n in doc["no_grad_mismatch"]) and len(doc["differing"]) == 9


def test_accumulation_scaler_and_clipping_seen_at_the_step(runs):
    for name in ("full-clip", "accum-scaler-clip", "full-noclip", "full-clip-step2"):
        assert runs[name]["code"] == 0 and "done" in runs[name]["stdout"], runs[name]["stderr"]
    assert runs["full-clip"]["stdout"].count("done") == 3  # the three loops in one process, a file each
    doc = _doc(runs["full-clip"]["sig"])
    assert doc["source"] == "optimizer" and doc["optimizer"] == "SGD" and doc["trainer_args"] is None
    assert sorted(doc["signatures"]) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    # The accumulated, unscaled and clipped gradient is what the step sees: the same as one batch, clipped.
    proc = compare(runs["full-clip"]["sig"], runs["accum-scaler-clip"]["sig"])
    assert proc.returncode == 0 and "verdict: MATCH" in proc.stdout, proc.stdout + proc.stderr
    # Without clipping the step sees the raw norm.
    proc = compare(runs["full-clip"]["sig"], runs["full-noclip"]["sig"])
    assert proc.returncode == 1 and "relative error above 0.001 (4)" in proc.stdout, proc.stdout
    r = runs["full-clip-step2"]  # one model: its line names none
    assert _doc(r["sig"])["step"] == 2 and f"gradient signatures of step 2 (4 parameters): {r['sig']}" in r["stderr"]
    proc = compare(runs["full-clip"]["sig"], runs["full-clip-step2"]["sig"], "--precision", "bf16")
    assert "the files are of different steps (1 and 2)" in proc.stdout and "rtol 0.1" in proc.stdout


def test_a_failed_signature_write_never_harms_the_run(runs):
    r = runs["unwritable"]
    assert r["code"] == 0 and "done" in r["stdout"]
    assert r["stderr"].count("cannot write the gradient signatures") == 1 and "the run goes on" in r["stderr"]
    assert "no gradient signatures: " in r["stderr"] and "healthy: no finding in 2 scans" in r["stderr"]
    summary = _doc(runs["folder"] / "summary.json")
    assert summary["processes"][0]["signature"]["error"]
    assert "gradient signatures of step" not in r["stderr"]  # one model, and its file not written


def test_bad_input_is_exit_2_with_one_line(runs, tmp_path):
    good = runs["off"]["sig"]
    (tmp_path / "notjson.json").write_text("{oops")
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "run", "results": []}))
    for bad, message in ((tmp_path / "missing.json", "missing.json: no such file"),
                         (tmp_path / "notjson.json", "notjson.json: not JSON"),
                         (tmp_path / "summary.json", "a 'run' result; expected a gradient signature file"),
                         (tmp_path, "is a folder")):
        proc = compare(good, bad)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stderr and proc.stderr.startswith("benchsuite compare-grads: ")
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run(COMPARE + [str(good), str(tmp_path / "missing.json")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("missing.json: no such file")
    proc = compare(good, good, "--rtol", "0")
    assert proc.returncode == 2 and "--rtol must be positive" in proc.stderr
    proc = compare(good, good, "--rtol", "0.1", "--precision", "fp16")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_different_parameter_sets_and_shapes_are_differences(runs, tmp_path):
    doc = _doc(runs["off"]["sig"])
    names = list(doc["signatures"])
    fewer = json.loads(json.dumps(doc))
    del fewer["signatures"][names[0]]
    reshaped = json.loads(json.dumps(doc))
    reshaped["signatures"][names[1]]["numel"] += 1
    (tmp_path / "fewer.json").write_text(json.dumps(fewer))
    (tmp_path / "reshaped.json").write_text(json.dumps(reshaped))
    proc = compare(runs["off"]["sig"], tmp_path / "fewer.json")
    assert proc.returncode == 1 and f"trainable in A only (1): {names[0]}" in proc.stdout, proc.stdout + proc.stderr
    proc = compare(runs["off"]["sig"], tmp_path / "reshaped.json")
    assert proc.returncode == 1 and "shape differs (1)" in proc.stdout and "Traceback" not in proc.stderr


def test_signature_options_are_checked_before_the_script_starts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    marker = tmp_path / "started"
    script = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    for options, message in ((["--signature", str(blocker / "sub" / "s.json")], "cannot create the folder"),
                             (["--signature-step", "2"], "--signature-step needs --signature"),
                             (["--signature", str(tmp_path / "s.json"), "--signature-step", "0"], "at least 1")):
        proc = subprocess.run(WATCH + options + script, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not marker.exists()


def test_real_setups_driver_checks_the_checkout_and_patches_by_name(tmp_path):
    # python experiments/real_setups.py runs MedicalGPT's scripts (docs/results/compare-real-setups.md); without
    # a checkout it stops at once.
    driver = Path(__file__).resolve().parents[2] / "experiments" / "real_setups.py"
    proc = subprocess.run([sys.executable, str(driver), "--medicalgpt", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is not a MedicalGPT checkout: training/supervised_finetuning.py" in proc.stderr
    import importlib.util
    spec = importlib.util.spec_from_file_location("real_setups", driver)
    assert spec and spec.loader
    R = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(R)
    data, model = {"sft": "D/sft", "reward": "D/reward"}, {"path": "M"}
    cmd = R.command(tmp_path, tmp_path / "w", "rm-lora-ckpt-reentrant-no-input-hook", data, model)
    assert cmd[1] == "-c" and cmd[3] == R.RM and "--validation_file_dir" in cmd
    shown = R._shown(cmd, tmp_path / "w", tmp_path)
    assert shown[2] == ("<launcher: from_pretrained without load_in_4bit=False/load_in_8bit=False; "
                        "enable_input_require_grads a no-op; then runpy.run_path(script)>")
    assert R.command(tmp_path, tmp_path / "w", "sft-lora", data, model)[1] == R.SFT  # the SFT script runs as it is
