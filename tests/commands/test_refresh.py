"""Issue 28: benchsuite refresh judges the catalogue on new releases and, with --write, corrects a wrong range
by bisecting it. The planted case is transformers' real change of default (non-reentrant checkpointing from
5.0), declared with a wrong range."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version
from strict import strict_loads

from benchsuite import refresh
from benchsuite.harness.discover import default_cases_dir

ROOT = Path(__file__).resolve().parents[2]


def test_recorded_versions_and_new_releases_from_the_index_listing():
    matrix = {"cells": [{"pins": ["transformers==5.0.0"]}, {"pins": ["transformers==5.23.0"]},
                        {"pins": ["peft==0.21.2"]}, {"pins": []}]}
    rec = refresh.recorded_versions(matrix)
    assert rec == {"transformers": Version("5.23.0"), "peft": Version("0.21.2")}
    listing = {"transformers": ["5.22.0", "5.23.0", "5.24.0", "5.25.0"], "peft": ["0.21.2"],
               "trl": ["1.15.0", "1.16.0"]}
    found = refresh.new_releases(["transformers", "peft", "trl"], rec, versions_of=listing.__getitem__, log=print)
    assert found == [("transformers", "5.24.0"), ("transformers", "5.25.0"), ("trl", "1.16.0")]
    dates = {"5.24.0": datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc),
             "5.25.0": datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)}
    since = datetime.datetime(2026, 11, 15, tzinfo=datetime.timezone.utc)
    found = refresh.new_releases(["transformers"], rec, since, versions_of=listing.__getitem__,
                                 date_of=lambda p, v: dates.get(v), log=print)
    assert found == [("transformers", "5.25.0")]


@pytest.mark.network
@pytest.mark.slow
def test_refresh_write_corrects_a_planted_wrong_range(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    source = (default_cases_dir() / "transformers-v5-nonreentrant-default.py").read_text()
    planted = source.replace('affected={"transformers": ">=5"}', 'affected={"transformers": ">=5.1"}')
    assert planted != source, "the case's declaration changed: update the planted range"
    (cases / "transformers-v5-nonreentrant-default.py").write_text(planted)
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps({"kind": "matrix", "cells": [
        {"case": "transformers-v5-nonreentrant-default", "env": "transformers==4.57.6",
         "pins": ["transformers==4.57.6"], "status": "not-reproduced", "agrees": True}]}))
    out = tmp_path / "refresh.json"
    r = subprocess.run([sys.executable, "-m", "benchsuite", "refresh", "--cases-dir", str(cases), "--matrix",
                        str(matrix), "--release", "transformers==5.0.0", "--write", "--site", str(tmp_path / "site"),
                        "--json", str(out)], capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]  # a contradiction was found (and corrected)
    doc = strict_loads(out.read_text())
    rel = doc["releases"][0]
    assert rel["contradictions"] == ["transformers-v5-nonreentrant-default"]
    # the bisection over real pinned releases (what `benchsuite bisect` runs; on Ray in tests/harness/test_ray.py)
    (bisected,) = rel["bisected"]
    assert bisected["bisected"] and bisected["range"] == ["4.57.6", "5.0.0"]
    result = bisected["result"]
    assert result["found"] and result["last"] == "4.57.6" and result["first"] == "5.0.0"
    assert result["last_status"] == "not-reproduced" and result["first_status"] == "reproduced"
    assert "transformers 5.0.0: 0 of 1 as declared; transformers-v5-nonreentrant-default: range written" in r.stdout
    fixed = (cases / "transformers-v5-nonreentrant-default.py").read_text()
    assert 'affected={"transformers": ">=5.0.0"}' in fixed, fixed[:1500]
    merged = strict_loads(matrix.read_text())
    assert "transformers==5.0.0" in merged["environments"]
    assert (tmp_path / "site" / "index.html").is_file()


def test_merging_a_refresh_keeps_the_other_cases_of_a_column(tmp_path):
    matrix = tmp_path / "m.json"
    matrix.write_text(json.dumps({"kind": "matrix", "environments": ["transformers==5.25.0"], "cells": [
        {"case": "a", "env": "transformers==5.25.0", "status": "reproduced"},
        {"case": "b", "env": "transformers==5.25.0", "status": "reproduced"}]}))
    doc = {"releases": [{"package": "transformers", "version": "5.25.0",
                         "cells": [{"case": "b", "env": "transformers==5.25.0", "status": "not-reproduced"}]}]}
    merged = refresh.merge_into_matrix(matrix, doc)
    assert {(c["case"], c["status"]) for c in merged["cells"]} == {("a", "reproduced"), ("b", "not-reproduced")}
    assert merged["environments"] == ["transformers==5.25.0"]
