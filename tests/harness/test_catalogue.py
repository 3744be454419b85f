"""Issue 14: the catalogue's reach and the tools that keep its declarations honest (bisect --write, the
date an environment's companions are resolved as of, verdicts combined over repeats). Fast: no case runs."""
from __future__ import annotations

import datetime
import json
import textwrap

from benchsuite.harness import bisect, catalogue_doc, envs
from benchsuite.harness.discover import case_files, default_cases_dir, load_case
from benchsuite.harness.execute import combine_runs

CASE = textwrap.dedent('''\
    from benchsuite.case import Case, Symptom

    case = Case(
        id="probe",
        title="probe",
        references=["x/y#1"],
        affected={"transformers": "<4.57", "peft": ">=0.10"},  # a guess
        symptom=Symptom(description="flag", observed="flag"),
    )


    @case.trigger
    def trigger(ctx):
        return ctx.observed(flag=True)
''')


def test_catalogue_has_at_least_35_cases_each_citing_reports():
    files = case_files(default_cases_dir())
    assert len(files) >= 35
    for cid, path in files.items():
        case = load_case(path)
        assert case.id == cid and case.references and case.title, cid


def test_every_catalogue_case_declares_one_family_and_user_cases_need_none(tmp_path):
    from benchsuite.case import FAMILIES
    from benchsuite.harness.discover import select
    for cid, path in case_files(default_cases_dir()).items():
        assert load_case(path).family in FAMILIES, cid
    (tmp_path / "probe.py").write_text(CASE)  # written before families existed: still loads, family ""
    assert load_case(tmp_path / "probe.py").family == ""
    bad = tmp_path / "bad.py"
    bad.write_text(CASE.replace('id="probe",', 'id="bad", family="checkpointing",'))
    try:
        load_case(bad)
    except Exception as exc:
        assert "family 'checkpointing' is not one of gradient-checkpointing" in str(exc)
    else:
        raise AssertionError("an unknown family loaded")
    # a family is selectable like a tag
    rl = select(list(case_files(default_cases_dir()).values()), tags=["rl"])
    assert rl and all(load_case(p).family == "rl" or "rl" in load_case(p).tags for p in rl)


def test_rewrite_affected_replaces_the_range_of_one_package_and_its_comment():
    out = bisect.rewrite_affected(CASE, {"transformers": "<4.57", "peft": ">=0.10"}, "transformers", "<4.55.0",
                                  "bisected: reproduced at transformers 4.54.1, not-reproduced from 4.55.0")
    assert ('affected={"transformers": "<4.55.0", "peft": ">=0.10"},  # bisected: reproduced at transformers '
            '4.54.1, not-reproduced from 4.55.0\n') in out
    assert "a guess" not in out
    compile(out, "probe.py", "exec")
    assert out.replace(out.splitlines()[6], CASE.splitlines()[6]) == CASE  # nothing else changed


def test_rewrite_affected_adds_the_argument_when_the_case_has_none():
    source = CASE.replace('    affected={"transformers": "<4.57", "peft": ">=0.10"},  # a guess\n', "")
    out = bisect.rewrite_affected(source, {}, "transformers", ">=4.46", "bisected")
    assert '    references=["x/y#1"],\n    affected={"transformers": ">=4.46"},  # bisected\n' in out
    compile(out, "probe.py", "exec")


def test_write_range_prints_a_diff_and_never_writes_silently(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(CASE)
    said: list[str] = []
    result = {"found": True, "last": "4.54.1", "last_status": "reproduced", "first": "4.55.0",
              "first_status": "not-reproduced"}
    assert bisect.write_range(path, {"transformers": "<4.57", "peft": ">=0.10"}, "transformers", "<4.55.0",
                              result, said.append)
    text = "\n".join(said)
    assert "'<4.57' -> '<4.55.0'" in text and '-    affected={"transformers": "<4.57"' in text
    assert '+    affected={"transformers": "<4.55.0", "peft": ">=0.10"},' in text
    assert load_case(path).affected == {"transformers": "<4.55.0", "peft": ">=0.10"}
    said.clear()
    assert not bisect.write_range(path, {"transformers": "<4.55.0"}, "transformers", None, result, said.append)
    assert "left as it is" in said[0]


def test_companions_are_resolved_as_of_the_pinned_release_upload_time(monkeypatch, tmp_path):
    uploaded = datetime.datetime(2026, 1, 16, 9, 30, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(envs, "release_date", lambda package, ver: uploaded)
    limits = envs.contemporary_limits({"transformers": "4.57.6"})
    assert limits == {"peft": "2026-01-16T09:30:00Z", "accelerate": "2026-01-16T09:30:00Z"}
    (tmp_path / "bin").mkdir()
    (tmp_path / envs.RESOLUTION_FILE).write_text(json.dumps({"resolved_as_of": "2026-01-16T09:30:00Z"}))
    assert envs.resolution_of(tmp_path / "bin" / "python")["resolved_as_of"] == "2026-01-16T09:30:00Z"
    from benchsuite.harness import versions
    monkeypatch.setattr(versions.sys, "prefix", str(tmp_path))
    assert versions.environment()["resolved_as_of"] == "2026-01-16T09:30:00Z"


def test_combined_runs_are_flaky_when_a_fix_verdict_differs():
    def run(works):
        return {"id": "c", "status": "reproduced", "symptom_seen": True, "basis": "seen", "duration_s": 1.0,
                "fixes": [{"name": "f", "works": works}], "noop_fix": {"works": False}}
    steady = combine_runs([run(True), run(True)])
    assert steady["status"] == "reproduced" and steady["repeat"] == 2 and len(steady["runs"]) == 2
    flaky = combine_runs([run(True), run(False)])
    assert flaky["status"] == "flaky" and "run 2: reproduced (f:no" in flaky["reason"]
    assert "basis" not in flaky


def test_the_catalogue_page_names_the_cases_no_column_judged_and_what_they_need():
    # issue 27: no case is skipped in every column unless it needs what the matrix machine lacks, and the page
    # says which; a case judged in one column at least is not listed
    paths = case_files(default_cases_dir())
    cases = [load_case(paths[i]).metadata() for i in ("zero3-peft-nonreentrant", "bf16-unsupported-hardware",
                                                      "lora-loaded-frozen")]
    cells = [{"case": c["id"], "env": e, "status": "skipped", "agrees": True} for c in cases for e in ("a", "b")]
    cells[-1]["status"] = "reproduced"
    for cell in cells[2:4]:
        cell["reason"] = "needs a CUDA GPU (none visible)"
    text = catalogue_doc.render(cases, {"cells": cells})
    line = next(x for x in text.splitlines() if x.startswith("Skipped in every column:"))
    assert "`zero3-peft-nonreentrant` (needs a CUDA GPU (hardware the matrix machine lacks), deepspeed)" in line
    assert "`bf16-unsupported-hardware` (needs a CUDA GPU" in line and "lora-loaded-frozen" not in line


def test_the_catalogue_page_names_its_matrix_from_the_checkout(tmp_path):
    # refresh --write passes the matrix's absolute path: the committed page names it as its command is run, from the
    # checkout's root; a matrix elsewhere keeps the path it was given
    case = load_case(case_files(default_cases_dir())["lora-loaded-frozen"]).metadata()
    (tmp_path / "docs" / "results").mkdir(parents=True)
    inside, outside = tmp_path / "docs" / "results" / "m.json", tmp_path.parent / f"{tmp_path.name}-m.json"
    cell = {"case": case["id"], "env": "e", "status": "reproduced", "agrees": True}
    for path in (inside, outside):
        path.write_text(json.dumps({"cells": [cell]}))
    page = tmp_path / "docs" / "catalogue.md"
    for path, shown in ((inside, "docs/results/m.json"), (outside, str(outside))):
        catalogue_doc.write([case], str(page), str(path))
        assert f"--matrix {shown}` from the case files" in page.read_text()
    outside.unlink()
