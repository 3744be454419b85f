"""benchsuite doctor: environment -> known cases, finding -> known cases (the scanner's reports here; watch naming the
case of a real run in tests/watch/test_watch.py, test_reentrant_lora_without_input_hook_stopped_under_raise)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from fixture_cases import DOCTOR, write_cases
from strict import strict_loads

from benchsuite.case import Case, Symptom
from benchsuite.cli import main as cli_main
from benchsuite.doctor import (
    explain,
    explain_report,
    holds,
    known_cases,
    known_cases_text,
    probe,
    render,
    watch_known_cases,
    watch_lines,
)
from benchsuite.gradscan import ParamRecord, ScanReport
from benchsuite.harness.discover import default_cases_dir
from benchsuite.watch.cli import render as watch_render

CLI = [sys.executable, "-m", "benchsuite"]
SEED = "reentrant-checkpoint-frozen-inputs"
LORA = [f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_{f}.default.weight" for i in (0, 1) for f in "AB"]



def _cli(*args, timeout=120):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("doctor-cases"), DOCTOR)


def test_doctor_default_environment_leaves_out_the_4x_failure():
    # In process (the CLI runs the same probe in a subprocess of the judged Python; the next test covers that).
    doc = {"pins": [], **probe(default_cases_dir())}
    if not holds({"transformers": ">=5"}, doc["environment"]):
        pytest.skip("the default environment is not transformers 5.x")
    cat = {c["id"]: c for c in doc["cases"]}
    assert cat[SEED]["category"] == "not-affected" and "transformers<5" in cat[SEED]["reason"]
    text = render(doc)
    assert f"\n  {SEED}\n" not in text and SEED in text.splitlines()[-1]  # only among the others
    assert cat["transformers-v5-nonreentrant-default"]["category"] == "applies"
    assert cat["zero3-peft-nonreentrant"]["category"] == "cannot-judge"  # deepspeed / a GPU: listed, not dropped
    assert "cannot be judged here" in text


def test_doctor_lists_run_and_judges_a_folder_of_cases_on_a_model(cases_dir, tmp_path):
    out, md, model = tmp_path / "d.json", tmp_path / "d.md", tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    proc = _cli("doctor", "--cases-dir", cases_dir, "--run", "--model", model, "--json", out, "--markdown", md)
    assert proc.returncode == 0, proc.stderr
    cat = {c["id"]: c for c in strict_loads(out.read_text())["cases"]}
    assert cat["doc-chatglm-only"]["category"] == "not-for-model" and "chatglm" in cat["doc-chatglm-only"]["reason"]
    assert cat["doc-applies"]["on_model"] and cat["doc-applies"]["run"]["on_model"]
    assert cat["doc-applies"]["category"] == "applies"
    assert cat["doc-missing-requirement"]["category"] == "cannot-judge"
    assert "needs benchsuite_no_such_package (not installed)" in cat["doc-missing-requirement"]["reason"]
    assert cat["doc-old-release"]["category"] == "not-affected"
    run = cat["doc-applies"]["run"]
    assert run["status"] == "reproduced"
    verdicts = {f["name"]: f for f in run["fixes"]}
    assert verdicts["clear"]["works"] is True and verdicts["nothing"]["works"] is False
    assert verdicts["future"]["not_applicable"]
    fixes = {f["name"]: f for f in cat["doc-applies"]["fixes"]}
    assert fixes["future"]["available"] is False
    text = proc.stdout
    assert "here, on your model: REPRODUCED" in text and "works here" in text and "does not work here" in text
    assert "watch shows it as: lr-zero" in text and "not available in this environment" in text
    assert "doc-missing-requirement: needs benchsuite_no_such_package" in text
    assert "--run: 1 of 1 reproduced here" in text
    assert "`doc-missing-requirement`" in md.read_text()


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/folder"], "no such folder"),
    (["--with", "torch==1.0"], "torch cannot be pinned"),
    (["--with", "transformers"], "give a version"),
    (["--cases-dir", "/no/such/cases"], "no such folder"),
    (["--json", "-", "--markdown", "-"], "only one report"),
])
def test_doctor_usage_errors_are_one_line(args, message, capsys):
    assert cli_main(["doctor", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_known_cases_prefer_the_running_versions_and_match_names_and_context():
    old = {"torch": "2.13.0", "transformers": "4.57.6", "peft": "0.18.1"}
    new = {"torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2"}
    hits = known_cases("no-gradient", LORA, old, {"trainer": True})
    assert hits[0]["id"] == SEED and hits[0]["in_range"]  # its own symptom is this evidence: ranked first
    assert {"peft-wrap-before-checkpointing", SEED} <= {h["id"] for h in hits}
    fix = {f["name"]: f for f in hits[0]["fixes"]}
    assert set(fix) == {"enable_input_require_grads", "non_reentrant"}  # declared works=False ones left out
    assert "transformers==4.57.6" in fix["enable_input_require_grads"]["verified"]
    assert [h["id"] for h in known_cases("no-gradient", LORA, old, {"trainer": False})] == [SEED]  # context
    assert known_cases("no-gradient", ["score.weight"], old) == []  # the params regex
    later = known_cases("no-gradient", LORA, new)
    assert later[0]["id"] == SEED and not later[0]["in_range"]  # still named, marked outside its range
    assert [h["id"] for h in known_cases("nothing-trainable", ["(every parameter)"], new)][:1] == ["lora-loaded-frozen"]


def test_a_new_case_file_extends_the_diagnosis(cases_dir):
    hits = known_cases("lr-zero", ["w"], {"torch": "2.13.0"}, cases_dir=cases_dir)
    assert [h["id"] for h in hits] == ["doc-applies"]
    assert [f["name"] for f in hits[0]["fixes"]] == ["clear"]  # the future-only fix is not offered
    with pytest.raises(ValueError, match="unknown finding"):
        Case(id="x", title="x", references=["a/b#1"], symptom=Symptom(description="x", observed="x"),
             explains=["no-such-finding"])


def _summary(findings, versions, trainers=1):
    return {"rank": 0, "world_size": 1, "pid": 1, "optimizer_steps": 4, "first_step": 1, "last_step": 4,
            "scans": 4, "trainers": trainers, "params": {"trainable": 9, "in_optimizers": 9, "scanned": 9},
            "overhead": {}, "findings": findings, "zero_gradient_steps": [], "notes": [], "versions": versions}


def test_watch_summary_names_the_case_and_its_verified_fix():
    finding = {"kind": "no-gradient", "title": "no gradient", "cause": "...", "count": 4, "names": LORA,
               "since_step": 1, "confirmed_at": 3, "status": "open", "cleared_at": None}
    procs = [_summary([finding], {"torch": "2.13.0", "transformers": "4.57.6", "peft": "0.18.1"})]
    text = watch_render(procs, 0, 1.0)
    assert f"no gradient -> {SEED}" in text and "includes your transformers 4.57.6" in text
    # (the versions come from docs/results/matrix-catalogue.json, which the catalogue's matrix rewrites)
    line = next(ln for ln in text.splitlines()
                if "fix: model.enable_input_require_grads() after enabling checkpointing (verified: worked with " in ln)
    assert "4.57.6" in line
    doc = watch_known_cases(procs)
    assert doc[0]["kind"] == "no-gradient" and doc[0]["cases"][0]["id"] == SEED
    assert watch_lines([_summary([{**finding, "status": "cleared"}], {})]) == []  # only open findings
    assert "known cases" not in watch_render([_summary([], {})], 0, 1.0)


def test_scanner_report_names_the_case():
    records = [ParamRecord(n, "float32", 16, none=True) for n in LORA] + [ParamRecord("score.weight", "float32", 4)]
    found = explain_report(ScanReport(records, "torch"), versions={"transformers": "4.57.6"})
    assert found["no-gradient"][0]["id"] == SEED
    finding = {"kind": "no-gradient", "names": LORA, "status": "open"}  # as GradScanCallback.findings() gives it
    assert explain([finding, {**finding, "kind": "lr-zero", "status": "cleared"}])["no-gradient"][0]["id"] == SEED
    assert known_cases_text("no-gradient", LORA, {"transformers": "4.57.6"}).startswith(
        f"known case: {SEED} (fix: model.enable_input_require_grads()")
    assert known_cases_text("replicas-differ", ["w"]) == ""


def test_render_without_applicable_cases():
    doc = {"pins": [], "environment": {"python": "3.11"}, "cases": [
        {"id": "a", "category": "not-affected", "reason": "affected torch<1"}]}
    text = render(doc)
    assert "no known failure of the catalogue applies here" in text and "do not apply to these versions: a" in text


@pytest.mark.network
def test_doctor_in_a_pinned_4x_environment_lists_the_seed_case(tmp_path):
    out = tmp_path / "d.json"
    proc = _cli("doctor", "--with", "transformers==4.57.6", "--json", out, timeout=900)
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(out.read_text())
    assert doc["environment"]["transformers"] == "4.57.6" and doc["pins"] == ["transformers==4.57.6"]
    cat = {c["id"]: c for c in doc["cases"]}
    assert cat[SEED]["category"] == "applies" and f"\n  {SEED}\n" in proc.stdout
    assert cat["transformers-v5-nonreentrant-default"]["category"] == "not-affected"
    # trl is not in the pinned environment: the case is listed as one that cannot be judged there
    assert cat["trl-sft-adapter-loaded-frozen"]["category"] == "cannot-judge"


def test_watch_lines_have_no_empty_field_for_a_case_of_every_version():
    # fp16-overflow-nan declares no affected range (every version) and explains non-finite gradients
    procs = [{"optimizer_steps": 2, "versions": {"torch": "2.13.0", "transformers": "5.25.0"}, "trainers": 0,
              "findings": [{"kind": "non-finite", "title": "non-finite gradient values", "status": "open",
                            "names": ["model.layers.1.self_attn.v_proj.lora_B.default.weight"]}]}]
    text = "\n".join(watch_lines(procs))
    assert "fp16-overflow-nan" in text and "(affected every version)" in text
    assert "your )" not in text and "()" not in text and ": )" not in text
