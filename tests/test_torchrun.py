"""ctx.torchrun: ranks under torch.distributed.run's launcher, judged as one scenario; the harness's timeout
ends every rank."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from procs import processes_with

CLI = [sys.executable, "-m", "benchsuite"]

CASES = {
    # rank 1 raises (the symptom, by class and message); the fix trains a DDP-wrapped module on 2 ranks
    # over gloo and warns on rank 0.
    "rank-raises": """
        from benchsuite.case import Case, Symptom
        case = Case(id="rank-raises", title="a rank raises", references=["example/project#1"],
                    symptom=Symptom("ValueError on rank 1", exception="ValueError", message="rank one broke"))


        def _broken(ctx):
            import torch.distributed as dist
            if ctx.rank == 1:
                raise ValueError("rank one broke")
            dist.barrier()


        def _trains(ctx, steps):
            import warnings

            import torch
            import torch.distributed as dist
            assert dist.get_world_size() == ctx.world_size == 2 and ctx.backend == "gloo"
            torch.manual_seed(0)
            model = torch.nn.Linear(3, 1)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            if ctx.rank == 0:
                warnings.warn("seen on rank zero")
            result = ctx.train(model, batch=torch.randn(4, 3), steps=steps, loss_fn=lambda m, b: ddp(b).pow(2).mean())
            result.extra["world_size"] = dist.get_world_size()
            return result


        @case.trigger
        def trigger(ctx):
            return ctx.torchrun(_broken, nproc=2)


        @case.fix("train instead")
        def trains(ctx):
            return ctx.torchrun(_trains, nproc=2, steps=2)
    """,
    "rank-hangs": """
        from benchsuite.case import Case, Symptom
        case = Case(id="rank-hangs", title="a rank never returns", references=["example/project#2"],
                    symptom=Symptom("raises", exception="KeyError"))


        def _sleeps(ctx):
            import time
            time.sleep(600)


        @case.trigger
        def trigger(ctx):
            return ctx.torchrun(_sleeps, nproc=2)
    """,
}




def test_ranks_under_torchrun_are_judged_and_a_timeout_ends_them_all(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name, text in CASES.items():
        (cases / f"{name}.py").write_text(textwrap.dedent(text))
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
