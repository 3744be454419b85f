"""The harness end to end: the seed cases' verdicts, and bad input that must not spoil a run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fixture_cases import write_cases
from packaging.version import Version
from procs import processes_with
from strict import strict_loads

from benchsuite.harness.discover import case_files, default_cases_dir

SEEDS = ["reentrant-checkpoint-frozen-inputs", "lora-loaded-frozen", "chatglm-seqcls-output-attentions"]
CLI = [sys.executable, "-m", "benchsuite"]


def run_cli(*args, timeout=600, check_codes=(0,)):
    proc = subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode in check_codes, proc.stdout + proc.stderr
    return proc


def results_by_id(path: Path) -> dict:
    return {r["id"]: r for r in strict_loads(path.read_text())["results"]}


CATALOGUE = {
    "bf16-unsupported-hardware", "chatglm-seqcls-output-attentions", "ddp-reentrant-marked-ready-twice",
    "eval-mode-disables-checkpointing", "fp16-overflow-nan", "fp16-unscale-fp16-grads", "gradscaler-skipped-steps",
    "grad-accumulation-loss-normalization", "lora-loaded-frozen", "peft-wrap-before-checkpointing",
    "reentrant-checkpoint-frozen-inputs", "reentrant-checkpoint-no-grad-fn", "remote-code-checkpointing-kwargs-ignored",
    "remote-code-old-checkpointing-enable", "seqcls-custom-head-not-trained", "target-modules-mismatch",
    "torch-use-reentrant-warning", "transformers-v5-nonreentrant-default", "use-cache-with-checkpointing",
    "zero3-peft-nonreentrant",
    # issue 14
    "disable-adapter-unfreezes-inference-adapter", "evaluation-strategy-removed", "fsdp-lora-uniform-requires-grad",
    "get-peft-model-then-from-pretrained", "get-peft-model-to-load-adapter", "kbit-prepare-freezes-peft-adapters",
    "pad-eos-collator-masks-eos", "inference-load-modules-to-save-trainable", "peft-trainer-eval-loss-missing",
    "seqcls-no-pad-token", "sft-max-seq-length-removed", "trainer-removes-custom-columns",
    "trl-dpo-adapter-loaded-frozen", "trl-grpo-adapter-loaded-frozen", "trl-sft-adapter-loaded-frozen",
    # issue 27
    "accelerate-gather-eval-duplicates", "accumulation-logged-loss-not-divided", "assistant-mask-no-generation-tag",
    "autocast-loop-stale-weight-cache", "bf16-merge-loses-lora-delta", "bf16-weights-updates-vanish",
    "causal-labels-shifted-twice", "chat-eos-not-in-generation-config", "chat-template-double-bos",
    "collator-with-padding-unpadded-labels", "completion-only-response-key-not-found",
    "compute-loss-num-items-typeerror", "custom-4d-mask-not-inverted", "custom-compute-loss-accumulation-not-divided",
    "ddp-forward-through-module-no-allreduce", "ddp-lora-unused-pooler-reduction", "dpo-trainer-beta-kwarg-removed",
    "eval-loss-nan-truncated-completion", "fp16-weights-adam-eps-nan", "from-config-uses-config-dtype",
    "fsdp-lora-save-pretrained-sharded", "fsdp-lora-uniform-dtype", "fsdp-save-main-process-only-hang",
    "gradscaler-clip-before-unscale", "gradscaler-unscale-twice-accumulation", "kbit-prepare-upcasts-unquantized",
    "label-smoothing-accumulation-inflated", "merge-unassigned-saves-empty-adapter", "merged-saved-next-to-adapter",
    "multilabel-int-labels-bce", "nan-loss-hidden-by-logging-filter", "new-tokens-adapter-base-not-resized",
    "packed-position-ids-mask-ignored", "packing-cross-contamination", "peft-named-adapter-best-model-not-loaded",
    "peft-named-adapter-resume-invalid-checkpoint", "resume-finished-checkpoint-trains-nothing",
    "resume-new-batch-size-ignored", "resume-new-learning-rate-ignored", "resume-rng-state-weights-only",
    "reward-adapter-merged-as-causal-lm", "save-only-model-resume-fresh-optimizer", "sdpa-output-attentions-empty",
    "sdpa-sliding-window-ignored",
    "seqcls-accumulation-loss-not-divided", "seqcls-num-labels-1-regression", "seqcls-reward-read-at-first-pad",
    "sft-chat-template-dict-prompt-trained", "sft-truncation-drops-completion", "state-dict-patch-empty-adapter",
    "tied-lm-head-lora-merge", "tied-modules-to-save-merged-reload", "tokenizer-no-pad-token-collator",
    "trainer-tokenizer-kwarg-removed", "training-args-resume-ignored", "trl-dpo-prompt-fills-max-length",
    "trl-dpo-ref-model-with-peft-config", "trl-grpo-batch-not-divisible-by-generations",
    "trl-grpo-pretrained-adapter-wrong-reference", "trl-grpo-reward-func-no-kwargs",
    "trl-grpo-reward-wrong-length-broadcast", "trl-grpo-zero-std-rewards", "trl-reward-model-num-labels-2",
    "trl-sft-peft-model-with-peft-config", "unfrozen-head-not-in-adapter", "use-auth-token-removed",
    "v5-default-dtype-bf16-finetune",
    # 2026-12-08
    "causal-collator-builds-no-labels", "seqcls-default-two-labels", "new-tokens-embeddings-not-resized",
    "causal-labels-tokenized-separately",
}


def test_catalogue_ids_are_pinned():
    # Renames are deliberate: update this set with the case files.
    assert set(case_files(default_cases_dir())) == CATALOGUE


def test_every_case_names_its_public_reports():
    from benchsuite.harness.discover import load_case
    for cid, path in case_files(default_cases_dir()).items():
        case = load_case(path)
        assert case.references and all(re.fullmatch(r"[\w.-]+/[\w.-]+#\d+", r) for r in case.references), cid
        assert case.symptom.description and case.title, cid


def fixes(result):
    return {f["name"]: f["works"] for f in result["fixes"]}


def check_seed_verdicts(res: dict, transformers_version: str):
    for cid in SEEDS:
        assert res[cid]["status"] == res[cid]["expected"], res[cid]
    old = Version(transformers_version) < Version("5")
    reentrant = res["reentrant-checkpoint-frozen-inputs"]
    assert reentrant["status"] == ("reproduced" if old else "not-reproduced")
    if old:
        assert "None of the inputs have requires_grad=True" in reentrant["evidence"]["warning"]
        assert any("lora_B" in n for n in reentrant["evidence"]["unchanged"])
        assert fixes(reentrant) == {"enable_input_require_grads": True, "non_reentrant": True,
                                    "cast_float32": False, "nonzero_learning_rate": False}
    frozen = res["lora-loaded-frozen"]
    assert frozen["status"] == "reproduced" and frozen["evidence"]["trainable_params"] == 0
    assert fixes(frozen) == {"is_trainable": True, "unfreeze_lora": True}
    glm = res["chatglm-seqcls-output-attentions"]
    assert glm["status"] == "reproduced"
    assert "output_attentions" in glm["evidence"]["exception"]
    assert fixes(glm) == {"patch_forward_kwargs": True, "no_seq_cls_task_type": True,
                          "native_seq_cls_model": True, "disable_checkpointing": False}


def test_seed_cases_in_current_environment(tmp_path):
    import transformers
    out = tmp_path / "r.json"
    # and fp16-overflow-nan, whose NaN losses make the report's strict JSON name them (in the same runner)
    run_cli("run", *SEEDS, "fp16-overflow-nan", "--json", str(out), "--junit", str(tmp_path / "r.xml"), "--markdown",
            str(tmp_path / "r.md"))
    res = results_by_id(out)
    check_seed_verdicts(res, transformers.__version__)
    env = res[SEEDS[0]]["environment"]
    assert env["transformers"] == transformers.__version__ and env["torch"] and env["device"] == "cpu"
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "0" and suite.get("errors") == "0"
    assert res["fp16-overflow-nan"]["status"] == res["fp16-overflow-nan"]["expected"]
    doc = strict_loads(out.read_text())
    assert any(".losses[" in k and v in ("NaN", "Infinity") for k, v in doc["nonfinite"].items())
    json.loads(out.read_text())  # and Python's reader still reads it
    assert all(c in (tmp_path / "r.md").read_text() for c in SEEDS)


@pytest.mark.network
def test_seed_cases_in_pinned_transformers_4_57(tmp_path):
    out = tmp_path / "r.json"
    # a PEP 508 range is resolved to one release (4.57.6 is the last 4.57 one): the environment is named by it
    proc = run_cli("run", *SEEDS, "--with", "transformers>=4.57.6,<4.58", "--json", str(out))
    assert "transformers>=4.57.6,<4.58 -> transformers==4.57.6" in proc.stderr
    assert strict_loads(out.read_text())["pins"] == {"transformers": "transformers==4.57.6"}
    res = results_by_id(out)
    assert {r["environment"]["transformers"] for r in res.values()} == {"4.57.6"}
    check_seed_verdicts(res, "4.57.6")
    assert all(r["status"] == "reproduced" for r in res.values())
    # the environment keeps the bytecode of what its runner imported (this suite sets PYTHONDONTWRITEBYTECODE
    # where CI does), so the next process there does not compile torch and transformers again
    [env] = [p.parent for p in (Path(os.environ["BENCHSUITE_CACHE"]) / "envs").glob("*/.ready")
             if "transformers==4.57.6\n" in p.read_text()]
    for package in ("torch", "transformers"):
        assert list(env.glob(f"lib/python3*/site-packages/{package}/__pycache__/__init__.*.pyc")), package


def test_pinned_environment_that_cannot_be_built(tmp_path):
    out = tmp_path / "r.json"
    # A malformed requirement is a usage error, found before anything runs (issue 21).
    proc = run_cli("run", "lora-loaded-frozen", "--with", "transformers=4.57.6", "--json", str(out),
                   check_codes=(2,))
    assert "NAME==VERSION" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()





BAD_CASES = ('quick-ok', 'broken-syntax', 'hangs', 'kills-itself', 'dies-at-import')


def test_bad_input_is_reported_and_the_run_goes_on(tmp_path):
    cases = write_cases(tmp_path / "cases", BAD_CASES)
    out = tmp_path / "r.json"
    proc = run_cli("run", *BAD_CASES, "no-such-case", "--cases-dir", str(cases), "--timeout", "8",
                   "--json", str(out), "--junit", str(tmp_path / "r.xml"), check_codes=(2,))
    assert "unknown case id 'no-such-case'" in proc.stderr
    res = results_by_id(out)
    assert res["quick-ok"]["status"] == "reproduced" and res["quick-ok"]["fixes"][0]["works"] is True
    assert res["broken-syntax"]["status"] == "error" and "SyntaxError" in res["broken-syntax"]["reason"]
    assert res["hangs"]["status"] == "timeout"
    assert res["kills-itself"]["status"] == "crashed" and "SIGKILL" in res["kills-itself"]["reason"]
    assert res["dies-at-import"]["status"] == "crashed"
    assert res["no-such-case"]["status"] == "error"
    root = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert root.get("tests") == "6" and root.get("errors") == "5"


def test_interrupted_run_keeps_finished_results(tmp_path):
    cases = write_cases(tmp_path / "cases", ["quick-ok", "hangs"])
    out = tmp_path / "r.json"
    proc = subprocess.Popen(CLI + ["run", "quick-ok", "hangs", "--cases-dir", str(cases), "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and "quick-ok" in results_by_id(out):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    res = results_by_id(out)
    assert res["quick-ok"]["status"] == "reproduced" and "hangs" not in res


def test_list_shows_catalogue_and_broken_files(tmp_path, capsys):
    # in this process: the command's own code, without an interpreter's start-up
    from benchsuite.cli import main
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(c in listed for c in SEEDS)
    cases = write_cases(tmp_path / "cases", ["quick-ok", "broken-syntax"])
    assert main(["list", "--cases-dir", str(cases)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN CASE FILE" in out and "quick-ok" in out


def test_info_shows_build_facts(capsys):
    from benchsuite.cli import main  # in this process, as above (.ci/run starts `benchsuite info` itself)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "extension benchsuite._core" in out and "transformers" in out
    assert main(["info", "--json"]) == 0
    info = strict_loads(capsys.readouterr().out)
    assert info["extension"]["importable"] is True
    assert info["extension"]["cuda_host"] == "driver API, opened at run time"
    assert isinstance(info["cuda"]["routes"], list) and "driver_floor" in info["cuda"]


def test_interrupting_a_run_leaves_no_case_process_behind(tmp_path):
    cases = write_cases(tmp_path / "cases", ["hangs"])
    proc = subprocess.Popen(CLI + ["run", "hangs", "--cases-dir", str(cases)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    marker = str(cases / "hangs.py")
    deadline = time.time() + 60
    while time.time() < deadline and not processes_with(marker):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    deadline = time.time() + 10
    while time.time() < deadline and processes_with(marker):
        time.sleep(0.2)
    assert processes_with(marker) == []


