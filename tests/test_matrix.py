"""Matrix and bisection: the search itself, and real runs over pinned transformers releases."""
from __future__ import annotations

import importlib.util
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


def test_expand_and_table():
    envs = expand(["transformers==4.57.6,5.23.0", "peft==0.17.1"])
    assert envs == [["transformers==4.57.6", "peft==0.17.1"], ["transformers==5.23.0", "peft==0.17.1"]]
    cells = [{"case": "a", "env": "x", "status": "reproduced", "agrees": True},
             {"case": "a", "env": "y", "status": "reproduced", "agrees": False}]
    out = table(cells)
    assert "REPRO (!)" in out and "REPRO " in out


@pytest.mark.network
def test_two_version_matrix_of_the_seed_cases_and_the_same_on_a_local_ray_cluster(tmp_path):
    """Issue 16's command: `--ray local` gives the verdicts of the plain matrix and says Ray ran it."""
    args = ["matrix", "reentrant-checkpoint-frozen-inputs", "lora-loaded-frozen",
            "--with", "transformers==4.57.6,5.23.0"]
    out = tmp_path / "m.json"
    md = tmp_path / "m.md"
    proc = subprocess.run(CLI + args + ["--json", str(out), "--markdown", str(md)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = strict_loads(out.read_text())
    cells = {(c["case"], c["env"]): c for c in plain["cells"]}
    assert cells[("reentrant-checkpoint-frozen-inputs", "transformers==4.57.6")]["status"] == "reproduced"
    assert cells[("reentrant-checkpoint-frozen-inputs", "transformers==5.23.0")]["status"] == "not-reproduced"
    cell = cells[("reentrant-checkpoint-frozen-inputs", "transformers==4.57.6")]
    assert cell["environment"]["transformers"] == "4.57.6"
    assert "reentrant-checkpoint-frozen-inputs" in md.read_text()
    assert plain["executor"]["kind"] == "local"
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed: pip install 'benchsuite[ray]'")
    on_ray = tmp_path / "ray.json"
    proc = subprocess.run(CLI + args + ["--ray", "local", "--json", str(on_ray)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = strict_loads(on_ray.read_text())
    verdicts = lambda d: {(c["case"], c["env"]): (c["status"], c["expected"], c["agrees"], c["fixes"],  # noqa: E731
                                                  c["environment"]) for c in d["cells"]}
    assert verdicts(doc) == verdicts(plain) and len(doc["cells"]) == 4
    executor = doc["executor"]
    assert executor["kind"] == "ray" and executor["address"] == "local" and executor["local_cluster"]


@pytest.mark.network
def test_matrix_cell_for_an_environment_that_cannot_be_built(tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(CLI + ["matrix", "lora-loaded-frozen", "--with", "transformers==0.0.0.404",
                                 "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    cell = strict_loads(out.read_text())["cells"][0]
    assert cell["status"] == "error" and "could not be built" in cell["reason"]


@pytest.mark.network
def test_bisect_over_a_short_range(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run(CLI + ["bisect", "reentrant-checkpoint-frozen-inputs", "--package", "transformers",
                                 "--from", "4.57.6", "--to", "5.0.0", "--json", str(out)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = strict_loads(out.read_text())
    assert data["result"]["found"]
    assert data["result"]["last_status"] == "reproduced" and data["result"]["first"] == "5.0.0"
    assert data["result"]["first_status"] == "not-reproduced"
