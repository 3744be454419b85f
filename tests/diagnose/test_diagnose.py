"""Issue 29: from the symptom in hand to the case that explains it (doctor --error / --log). Fast: no case runs;
the ranking is checked over the whole catalogue with the errors its triggers really raise
(tests/fixtures/pasted_errors.json, written by experiments/pasted_errors.py from a catalogue run)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from strict import strict_loads

from benchsuite.diagnose import errors, logs, ranking
from benchsuite.doctor import probe
from benchsuite.harness.discover import default_cases_dir

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="module")
def rows():
    return probe(default_cases_dir())["cases"]


def pasted(exception: dict | None, warnings: list[str]) -> str:
    """As a user pastes it: a traceback through their own files and site-packages at other line numbers, the
    message wrapped at 88 columns, the warnings as the warnings module prints them."""
    out = [f"/home/someone/project/train.py:{17 + i}: UserWarning: {w}" for i, w in enumerate(warnings)]
    if exception:
        out += ["Traceback (most recent call last):",
                '  File "/home/someone/project/train.py", line 211, in <module>', "    trainer.train()",
                '  File "/opt/conda/envs/ft/lib/python3.10/site-packages/transformers/trainer.py", line 2245, '
                "in train", "    return inner_training_loop(",
                textwrap.fill(f"{exception['type']}: {exception['message']}", 88)]
    return "\n".join(out)


def _same_declaration(a: dict, b: dict) -> bool:
    sa, sb = a.get("symptom_match") or {}, b.get("symptom_match") or {}
    return any(sa.get(k) and sa.get(k) == sb.get(k) for k in ("message", "warning"))


def _declares_this_text(row: dict, text: str) -> bool:
    """The case's own declared message or warning pattern matches this very text: several cases declare it."""
    import re
    flat = " ".join(text.split())
    sm = row.get("symptom_match") or {}
    return any(sm.get(k) and re.search(sm[k], flat) for k in ("message", "warning"))


def test_every_declared_error_of_the_catalogue_ranks_its_case_first_or_with_its_twins(rows):
    texts = strict_loads((FIXTURES / "pasted_errors.json").read_text())
    by_id = {r["id"]: r for r in rows if r.get("category") != "broken"}
    declaring = [r for r in by_id.values() if (r.get("symptom_match") or {}).get("exception")
                 or (r.get("symptom_match") or {}).get("warning")]
    missing = [r["id"] for r in declaring if r["id"] not in texts and r.get("category") != "cannot-judge"]
    assert not missing, f"no pasted error for {missing}: run experiments/pasted_errors.py on a catalogue run"
    wrong = []
    for r in declaring:
        if r["id"] not in texts:
            continue
        t = texts[r["id"]]
        text = pasted(t["exception"], t["warnings"])
        matches = [m["id"] for m in ranking.by_error(text, list(by_id.values()))]
        if r["id"] not in matches[:3]:
            wrong.append(f"{r['id']}: ranked {matches[:4]}")
        elif matches[0] != r["id"]:
            rank = matches.index(r["id"])
            twins = all(_same_declaration(by_id[m], r) or _declares_this_text(by_id[m], text)
                        for m in matches[:rank])
            if not twins:
                wrong.append(f"{r['id']}: rank {rank + 1} behind {matches[:rank]}, which declare other texts")
    assert not wrong, "\n".join(wrong)


def test_a_pasted_error_names_why_and_whether_the_case_applies(rows):
    text = pasted({"type": "ValueError", "message": "Attempting to unscale FP16 gradients."}, [])
    best = ranking.by_error(text, rows)[0]
    assert best["id"] == "fp16-unscale-fp16-grads"
    assert any("Attempting to unscale FP16 gradients" in w for w in best["why"])
    assert best["applies"] in (True, False) and (best["applies"] or best["applies_reason"])


def test_unrelated_text_matches_nothing(rows):
    assert ranking.by_error("KeyboardInterrupt\nall good, the run finished", rows) == []
    # another error whose traceback's source lines happen to hold a case's short pattern (r"weight", declared for a
    # KeyError) is not that case
    text = ('Traceback (most recent call last):\n  File "/x/torch/nn/functional.py", line 3104, in cross_entropy\n'
            '    return torch._C._nn.cross_entropy_loss(input, target, weight, reduction, ignore_index)\n'
            'IndexError: Target 3 is out of bounds.\n')
    assert "trainer-removes-custom-columns" not in [m["id"] for m in ranking.by_error(text, rows)]


def test_parse_joins_a_message_over_several_lines_and_reads_printed_warnings():
    p = errors.parse("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                     "ValueError: Target modules {'q_proj'} not found\nin the base model. Please check.\n\n"
                     "/x/y.py:12: FutureWarning: something changed\n")
    assert p["exceptions"] == [("ValueError", "Target modules {'q_proj'} not found in the base model. Please check.")]
    assert p["warnings"] == [("FutureWarning", "something changed")]


def _state(tmp_path: Path, history: list[dict]) -> Path:
    path = tmp_path / "checkpoint-30" / "trainer_state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"global_step": 30, "max_steps": 30, "log_history": history}))  # NaN as Python writes it
    return path


def test_trainer_state_with_nan_losses_ranks_a_case_that_explains_them(tmp_path, rows):
    path = _state(tmp_path, [{"loss": math.nan, "grad_norm": math.nan, "learning_rate": 2e-5, "step": s}
                             for s in (10, 20, 30)])
    log = logs.read(path.parent)  # the checkpoint folder works too
    assert log["kind"] == "trainer_state" and {"loss-nonfinite", "grad-norm-nonfinite"} <= set(log["signs"])
    top = ranking.by_log(log, rows)[:3]
    assert top and all("loss-nonfinite" in next(r for r in rows if r["id"] == m["id"])["signs"] for m in top[:1])


def test_trainer_state_whose_evaluation_logged_no_eval_loss(tmp_path, rows):
    path = _state(tmp_path, [{"loss": 2.1, "step": 10}, {"eval_runtime": 1.2, "eval_samples_per_second": 40.0,
                                                         "step": 10}, {"loss": 1.9, "step": 20}])
    log = logs.read(path)
    assert "no-eval-loss" in log["signs"]
    assert "peft-trainer-eval-loss-missing" in [m["id"] for m in ranking.by_log(log, rows)[:3]]


def test_console_log_lines_nan_and_a_warning(tmp_path, rows):
    path = tmp_path / "train.log"
    path.write_text("{'loss': 2.3, 'grad_norm': 1.5, 'learning_rate': 1e-05, 'epoch': 0.1}\n"
                    "  5%|##     | 10/200 [00:10<03:10]\n{'loss': nan, 'grad_norm': nan, 'learning_rate': 2e-05, "
                    "'epoch': 0.2}\n/usr/lib/python3/site-packages/torch/optim/lr_scheduler.py:139: UserWarning: "
                    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and later, "
                    "you should call them in the opposite order\n")
    log = logs.read(path)
    assert log["kind"] == "console" and log["records"] == 2
    assert {"loss-nonfinite", "grad-norm-nonfinite", "steps-skipped"} <= set(log["signs"])
    assert ranking.by_log(log, rows)[0]["id"] == "gradscaler-skipped-steps"


def test_console_preference_loss_stuck_at_log2():
    text = "".join(f"{{'loss': '0.6931', 'grad_norm': 0.0, 'learning_rate': 5e-07, 'epoch': {i / 10}}}\n"
                   for i in range(1, 5))
    found = logs._result("console", Path("x"), logs.console_records(text), text, [])["signs"]
    assert {"loss-log2", "loss-flat", "grad-norm-zero"} <= set(found)
    assert "loss-zero" not in found and "lr-zero" not in found


def test_watch_report_findings_name_the_cases_that_explain_them(tmp_path, rows):
    path = tmp_path / "watch.json"
    path.write_text(json.dumps({"processes": [{"findings": [
        {"kind": "non-finite", "status": "open", "names": ["model.layers.0.mlp.up_proj.weight"],
         "title": "non-finite gradient values"}]}]}))
    log = logs.read(path)
    assert log["kind"] == "watch" and "grad-norm-nonfinite" in log["signs"]
    assert "fp16-overflow-nan" in [m["id"] for m in ranking.by_log(log, rows)[:3]]


def test_a_file_that_is_no_log_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(logs.LogError, match="no Trainer log line"):
        logs.read(tmp_path / "notes.txt")
    with pytest.raises(logs.LogError, match="without a trainer_state.json"):
        logs.read(tmp_path)


USER_CASE = textwrap.dedent('''\
    from benchsuite.case import Case, Symptom

    case = Case(
        id="my-dpo-identical-pairs",
        title="DPO loss stays at 0.6931: chosen and rejected identical after my preprocessing",
        references=["example/project#7"],
        family="rl",
        signs=["loss-log2"],
        symptom=Symptom(description="my preprocessing raises", exception="AssertionError",
                        message=r"chosen and rejected are identical"),
    )


    @case.trigger
    def trigger(ctx):
        raise AssertionError("chosen and rejected are identical")
''')


def _doctor(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchsuite", "doctor", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_doctor_cli_on_a_users_own_cases_dir(tmp_path):
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "my-dpo-identical-pairs.py").write_text(USER_CASE)
    err = "Traceback (most recent call last):\n  File \"prep.py\", line 3\nAssertionError: chosen and rejected " \
          "are identical\n"
    r = _doctor("--cases-dir", str(tmp_path / "cases"), "--error", "-", "--json", "-", stdin=err)
    assert r.returncode == 0, r.stderr
    doc = strict_loads(r.stdout)
    assert doc["kind"] == "doctor" and doc["matches"][0]["id"] == "my-dpo-identical-pairs"
    assert doc["matches"][0]["applies"] is True and doc["matches"][0]["why"]
    log = tmp_path / "run.log"
    log.write_text("{'loss': 0.6931, 'learning_rate': 1e-06}\n{'loss': 0.6931, 'learning_rate': 1e-06}\n")
    r = _doctor("--cases-dir", str(tmp_path / "cases"), "--log", str(log))
    assert r.returncode == 0, r.stderr
    assert "sign loss-log2" in r.stdout and "1. my-dpo-identical-pairs" in r.stdout
    r = _doctor("--cases-dir", str(tmp_path / "cases"), "--log", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "--log: cannot read" in r.stderr


def test_an_unknown_sign_is_a_load_error(tmp_path):
    from benchsuite.harness.discover import load_case
    bad = tmp_path / "bad.py"
    bad.write_text(USER_CASE.replace('"loss-log2"', '"loss-is-weird"').replace("my-dpo-identical-pairs", "bad"))
    with pytest.raises(Exception, match="unknown sign.*'loss-is-weird'.*loss-nonfinite"):
        load_case(bad)
