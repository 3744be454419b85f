"""Issue 28: reports that tell the whole truth. Every JSON parses strictly (NaN losses as null plus a flag), a fix
where the trigger did not reproduce reads "not judged", and a case that disagrees twice names both."""
from __future__ import annotations

import math
import re
import subprocess
import sys

from fixture_cases import write_cases
from strict import strict_loads

from benchsuite import strictjson


def _run(tmp_path, *ids):
    write_cases(tmp_path, ids)
    out = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "benchsuite", "run", *ids, "--cases-dir", str(tmp_path),
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    return proc, {r["id"]: r for r in strict_loads(out.read_text())["results"]}


def test_a_fix_where_the_trigger_did_not_reproduce_is_not_judged(tmp_path):
    proc, res = _run(tmp_path, "never-here", "needs-gpu")
    assert proc.returncode == 0, proc.stderr
    assert "eager:not-judged" in proc.stdout and "eager:works" not in proc.stdout
    # the console says why it did not reproduce, and what still triggers it
    assert re.search(r"never-here: not reproduced, as declared: affected torch<1; here torch \S+; fixed in torch 1\.0; "
                     r"still triggered here by: flag=True by hand", proc.stdout), proc.stdout
    skipped = next(line for line in proc.stdout.splitlines() if line.startswith("needs-gpu "))
    assert skipped.split()[1:4] == ["skipped", "-", "-"]
    assert res["never-here"]["fixes"][0]["not_judged"] == "trigger did not reproduce"


def test_a_case_that_disagrees_twice_names_both_in_its_reason(tmp_path):
    proc, res = _run(tmp_path, "twice-wrong")
    assert proc.returncode == 1
    r = res["twice-wrong"]
    assert r["status"] == "fix-failed"
    assert "nope" in r["reason"] and "the trigger reproduced where the declared range (affected torch<1)" \
                                      " predicts not-reproduced" in r["reason"]
    assert "predicts not-reproduced" in proc.stdout  # the console's reason line too


def test_strict_json_writes_null_and_names_the_place():
    text = strictjson.dumps({"results": [{"losses": [1.0, math.nan, -math.inf]}]})
    doc = strict_loads(text)
    assert doc["results"][0]["losses"] == [1.0, None, None]
    assert doc["nonfinite"] == {"results[0].losses[1]": "NaN", "results[0].losses[2]": "-Infinity"}
    assert "nonfinite" not in strict_loads(strictjson.dumps({"a": 1.5}))


def test_bisect_names_every_package_that_moved_between_its_boundary_probes():
    from benchsuite.harness.bisect import companions_moved, verdict
    seen = {"0.13.2": {"status": "reproduced", "environment": {"peft": "0.13.2", "transformers": "4.46.3",
                                                                "trl": None}},
            "0.14.0": {"status": "not-reproduced", "environment": {"peft": "0.14.0", "transformers": "4.47.1",
                                                                    "trl": "0.13.0"}}}
    assert companions_moved(seen["0.13.2"], seen["0.14.0"], "peft") == "transformers 4.46.3 -> 4.47.1, trl - -> 0.13.0"
    result = {"found": True, "last": "0.13.2", "first": "0.14.0", "last_status": "reproduced",
              "first_status": "not-reproduced", "why": ""}
    _, lines = verdict("c", {"peft": "<0.14.0"}, "peft", result, seen, ["0.13.2", "0.14.0"])
    assert "  between these two probes also: transformers 4.46.3 -> 4.47.1, trl - -> 0.13.0" in lines


def test_benchsuites_own_warnings_never_reach_symptom_matching(tmp_path):
    from benchsuite.gradscan import _native
    from benchsuite.harness.execute import _observe
    from benchsuite.scenario import Context

    def scenario(ctx):
        _native._warned.discard("probe")
        _native.warn_once("probe", "benchsuite._core is not built: the scan falls back to torch")
        import warnings
        warnings.warn("a library's own warning", UserWarning, stacklevel=1)
        return ctx.observed(flag=True)

    out = _observe(scenario, Context(str(tmp_path)))
    assert out["warnings"] == ["UserWarning: a library's own warning"]
    assert out["benchsuite_warnings"] == ["benchsuite._core is not built: the scan falls back to torch"]
