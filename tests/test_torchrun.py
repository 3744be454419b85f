"""ctx.torchrun: ranks under torch.distributed.run's launcher, judged as one scenario; the harness's timeout
ends every rank."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from fixture_cases import TORCHRUN, write_cases
from procs import processes_with

CLI = [sys.executable, "-m", "benchsuite"]





def test_ranks_under_torchrun_are_judged_and_a_timeout_ends_them_all(tmp_path):
    cases = write_cases(tmp_path / "cases", TORCHRUN)
    out = tmp_path / "r.json"
    proc = subprocess.run(CLI + ["run", "--cases-dir", str(cases), "--timeout", "12", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # rank-hangs times out
    res = {r["id"]: r for r in json.loads(out.read_text())["results"]}
    raised = res["rank-raises"]
    assert raised["status"] == "reproduced", raised
    assert raised["evidence"]["exception"] == "ValueError: rank one broke"
    fix = raised["fixes"][0]
    assert fix["works"] is True and fix["outcome"]["steps"] == 2 and fix["outcome"]["extra"]["world_size"] == 2
    assert any("seen on rank zero" in w for w in fix["outcome"]["warnings"])  # rank 0's warning, warned again
    assert raised["noop_fix"]["works"] is False
    assert res["rank-hangs"]["status"] == "timeout"
    marker = str(cases / "rank-hangs.py")
    deadline = time.time() + 10
    while time.time() < deadline and processes_with(marker):
        time.sleep(0.2)
    assert processes_with(marker) == []  # the launcher's agent and both ranks went with the case
