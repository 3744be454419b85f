"""Matrix and bisection: the search itself, and a cell whose environment cannot be built. The real runs over
pinned releases: the two-version matrix, plain and on Ray, in test_ray.py; a real bisection in test_refresh.py
(refresh --write bisects a contradiction) and, on Ray, in test_ray.py."""
from __future__ import annotations

import subprocess
import sys

import pytest
from strict import strict_loads

from benchsuite.harness.bisect import bisect, correction, disagreements
from benchsuite.harness.matrix import expand, table

CLI = [sys.executable, "-m", "benchsuite"]


class ScriptedProber:
    """Statuses per release, as a real Prober would find them; None = cannot be installed."""

    def __init__(self, statuses: dict[str, str | None]):
        self.statuses = statuses
        self.seen: dict[str, dict] = {}

    def status(self, v):
        s = self.statuses[v]
        self.seen[v] = {"status": s or "unusable", **({"unusable": True} if s is None else {})}
        return s


def test_bisect_finds_boundary_in_log_probes_and_steps_over_unusable():
    versions = [f"4.{i}.0" for i in range(30, 58)] + ["5.0.0", "5.1.0"]
    statuses = {v: ("reproduced" if v.startswith("4.") else "not-reproduced") for v in versions}
    statuses["4.56.0"] = statuses["4.57.0"] = None  # not installable with this torch
    prober = ScriptedProber(statuses)
    result = bisect(prober, versions)
    assert result["found"] and result["last"] == "4.55.0" and result["first"] == "5.0.0"
    assert result["unusable_between"] == ["4.56.0", "4.57.0"]
    assert len(prober.seen) <= 10  # O(log n) of 30 releases, plus the unusable ones stepped over
    assert correction({"transformers": ">=4.35,<5"}, "transformers", result, prober.seen, versions[0], versions[-1]) \
        == "<5.0.0"  # 4.30-4.34 reproduced too: the declared lower bound is wrong
    found = disagreements({"transformers": ">=4.35,<5"}, "transformers", prober.seen)
    assert any(d.startswith("4.30.0") for d in found)


def test_bisect_without_change_and_agreeing_declaration():
    versions = ["1.0", "1.1", "1.2"]
    prober = ScriptedProber({v: "reproduced" for v in versions})
    result = bisect(prober, versions)
    assert not result["found"] and "reproduced at both ends" in result["why"]
    assert correction({}, "peft", result, prober.seen, "1.0", "1.2") is None
    # declared fixed in 1.2 but reproduced there too: the range stays open above (no probe saw a fix)
    assert correction({"peft": "<1.2"}, "peft", result, prober.seen, "1.0", "1.2") == ">=1.0"


def test_expand_and_table():
    envs = expand(["transformers==4.57.6,5.23.0", "peft==0.17.1"])
    assert envs == [["transformers==4.57.6", "peft==0.17.1"], ["transformers==5.23.0", "peft==0.17.1"]]
    cells = [{"case": "a", "env": "x", "status": "reproduced", "agrees": True},
             {"case": "a", "env": "y", "status": "reproduced", "agrees": False}]
    out = table(cells)
    assert "REPRO (!)" in out and "REPRO " in out


@pytest.mark.network
def test_matrix_cell_for_an_environment_that_cannot_be_built(tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(CLI + ["matrix", "lora-loaded-frozen", "--with", "transformers==0.0.0.404",
                                 "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    cell = strict_loads(out.read_text())["cells"][0]
    assert cell["status"] == "error" and "could not be built" in cell["reason"]
