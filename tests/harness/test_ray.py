"""`matrix --ray` and `bisect --ray` on a real local Ray cluster (2 CPUs, started once for this module).

The cluster is benchsuite's own local cluster (rayexec.Cluster("local")), started in this process; the
commands under test connect to it by its address, as they would to any existing cluster. One test runs
`--ray local` itself (a cluster of its own) and checks that it leaves nothing behind. The issue's own
command (two cases x two transformers releases, on Ray against a plain run) needs the package index.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fixture_cases import write_cases
from procs import processes_with
from strict import strict_loads

from benchsuite.harness.bisect import bisect, bisect_parallel

# one local Ray cluster at a time: every Ray test on the same xdist worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'benchsuite[ray]'")

CLI = [sys.executable, "-m", "benchsuite"]
SEEDS = ["reentrant-checkpoint-frozen-inputs", "lora-loaded-frozen"]







def _local_cluster_processes(driver_pid: int) -> list[int]:
    """The processes of the local cluster a command started: their command lines name its session folder
    ($BENCHSUITE_CACHE/ray/<pid>-... or $TMPDIR/benchsuite-ray-<pid>-...)."""
    return processes_with(f"{os.sep}ray{os.sep}{driver_pid}-") + processes_with(f"benchsuite-ray-{driver_pid}-")


def _default_sessions() -> set[str]:
    """The session folders that a Ray cluster started by this process would have in Ray's default temp
    dir ($RAY_TMPDIR, else $TMPDIR, else /tmp, then /ray): session_<date>_<time>_<pid of the process that
    started it>. Other users' clusters on this machine have other pids."""
    root = Path(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp") / "ray"
    return {p.name for p in root.glob(f"session_*_{os.getpid()}")}


@pytest.fixture(scope="module")
def cluster():
    from benchsuite.harness.rayexec import Cluster
    before = _default_sessions()
    c = Cluster("local", workers=2)
    try:
        yield c
    finally:
        temp = c.temp_dir
        c.close()
        assert temp is not None and not temp.exists()
        # No Ray instance of this process's in Ray's default /tmp/ray (one auto-started by a Ray call after
        # something had shut down the cluster's connection, as a failed Cluster's close() once did).
        assert _default_sessions() <= before


def _address(cluster) -> str:
    return cluster.ray.get_runtime_context().gcs_address


def _verdicts(doc: dict) -> dict:
    return {(c["case"], c["env"]): (c["status"], c["expected"], c["agrees"], c["fixes"], c["environment"])
            for c in doc["cells"]}


@pytest.mark.network
def test_two_version_matrix_gives_the_same_verdicts_on_ray_as_a_plain_run(tmp_path, cluster):
    """Issue 16's command: two seed cases x two transformers releases, run plainly and on Ray (the module's
    cluster, reached by its address as any existing cluster is): the same verdicts, and each says how it ran."""
    args = ["matrix", *SEEDS, "--with", "transformers==4.57.6,5.23.0"]
    plain, on_ray = tmp_path / "plain.json", tmp_path / "ray.json"
    p = subprocess.run(CLI + args + ["--json", str(plain), "--markdown", str(tmp_path / "plain.md")],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    r = subprocess.run(CLI + args + ["--ray", _address(cluster), "--json", str(on_ray), "--markdown",
                                     str(tmp_path / "ray.md"), "--junit", str(tmp_path / "ray.xml")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = strict_loads(plain.read_text()), strict_loads(on_ray.read_text())
    cells = {(c["case"], c["env"]): c for c in a["cells"]}
    old, new = ("reentrant-checkpoint-frozen-inputs", "transformers==4.57.6"), \
        ("reentrant-checkpoint-frozen-inputs", "transformers==5.23.0")
    assert cells[old]["status"] == "reproduced" and cells[new]["status"] == "not-reproduced"
    assert cells[old]["environment"]["transformers"] == "4.57.6"
    assert "reentrant-checkpoint-frozen-inputs" in (tmp_path / "plain.md").read_text()
    assert _verdicts(b) == _verdicts(a) and len(b["cells"]) == 4
    assert [(c["case"], c["env"]) for c in b["cells"]] == [(c["case"], c["env"]) for c in a["cells"]]  # same order
    assert a["executor"]["kind"] == "local" and a["executor"]["jobs"] == 2 and a["executor"]["cells_per_minute"] > 0
    ex = b["executor"]
    assert ex["kind"] == "ray" and ex["address"] == _address(cluster) and not ex["local_cluster"]
    assert ex["nodes"] == 1 and ex["cpus"] == 2 and ex["workers"] == 2 and sum(ex["cells_by_node"].values()) == 4
    assert b["benchsuite_version"] == a["benchsuite_version"] and b["kind"] == "matrix"
    assert set(b) - {"executor"} == set(a) - {"executor"}
    assert "Run on Ray" in (tmp_path / "ray.md").read_text()
    suites = ET.parse(tmp_path / "ray.xml").getroot().findall("testsuite")  # one per environment
    assert [s.get("tests") for s in suites] == ["2", "2"]
    assert all(s.get("failures") == "0" and s.get("errors") == "0" for s in suites)
    assert "on Ray (1 node(s), 2 at a time)" in r.stderr


def test_a_lost_worker_marks_its_cells_error_and_the_run_goes_on(tmp_path):
    # --ray local: a cluster of its own, since this kills one of its workers; --ray-workers 2 puts each case
    # in a task of its own.
    cases = write_cases(tmp_path / "cases", ["quick-ok", "kills-its-worker", "needs-gpu"])
    out, xml = tmp_path / "m.json", tmp_path / "m.xml"
    home_ray = Path.home() / ".ray"
    had_home_ray = home_ray.exists()
    proc = subprocess.Popen(CLI + ["matrix", "--cases-dir", str(cases), "--ray", "local", "--ray-workers", "2",
                                   "--json", str(out), "--junit", str(xml)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stdout + stderr  # the lost cell disagrees
    doc = json.loads(out.read_text())
    cells = {c["case"]: c for c in doc["cells"]}
    assert cells["quick-ok"]["status"] == "reproduced" and cells["quick-ok"]["agrees"]
    lost = cells["kills-its-worker"]
    assert lost["status"] == "error" and not lost["agrees"]
    assert "the Ray task running this cell was lost" in lost["reason"] and "Error" in lost["reason"], lost["reason"]
    gpu = cells["needs-gpu"]
    assert gpu["status"] == "skipped" and "the Ray cluster has none" in gpu["reason"]
    executor = doc["executor"]
    assert executor["kind"] == "ray" and executor["local_cluster"] and executor["gpu_cases"] == ["needs-gpu"]
    errors = [t for t in ET.parse(xml).getroot().iter("testcase") if t.find("error") is not None]
    assert [t.get("name") for t in errors] == ["kills-its-worker"]
    assert "was lost" in errors[0].find("error").get("message")
    # Nothing left: no runner or case of the killed worker, no Ray process, no session folder, no token file.
    deadline = time.time() + 15
    while time.time() < deadline and (processes_with("kills-its-worker") or _local_cluster_processes(proc.pid)):
        time.sleep(0.2)
    assert processes_with("kills-its-worker") == [] and _local_cluster_processes(proc.pid) == []
    from benchsuite.harness.envs import cache_root
    leftovers = list((cache_root() / "ray").glob(f"{proc.pid}-*")) + list(
        Path(os.environ.get("TMPDIR", "/tmp")).glob(f"benchsuite-ray-{proc.pid}-*"))
    assert leftovers == []
    assert home_ray.exists() == had_home_ray


def test_ctrl_c_on_ray_keeps_finished_cells_and_stops_the_tasks(tmp_path, cluster):
    cases = write_cases(tmp_path / "cases", ["quick-ok", "hangs"])
    out = tmp_path / "m.json"
    task_folders = set(Path(tempfile.gettempdir()).glob("benchsuite-task-*"))
    proc = subprocess.Popen(CLI + ["matrix", "--cases-dir", str(cases), "--ray", _address(cluster), "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # the finished cell is on disk before the run ends
            if out.exists() and any(c["case"] == "quick-ok" for c in json.loads(out.read_text())["cells"]):
                break
            time.sleep(0.2)
        while time.time() < deadline and not processes_with(f"{os.sep}hangs.py"):
            time.sleep(0.2)  # the hanging case is running on its worker
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    doc = json.loads(out.read_text())
    assert [c["case"] for c in doc["cells"]] == ["quick-ok"] and doc["interrupted"] and doc["executor"]["kind"] == "ray"
    deadline = time.time() + 30
    while time.time() < deadline and processes_with(f"{os.sep}hangs.py"):
        time.sleep(0.2)
    assert processes_with(f"{os.sep}hangs.py") == []  # the task was cancelled: its worker, runner and case are gone
    # The killed worker's task folder was swept by a task on its node (an existing cluster's workers use
    # their own $TMPDIR): nothing is left there.
    assert set(Path(tempfile.gettempdir()).glob("benchsuite-task-*")) <= task_folders


def test_without_ray_the_option_says_how_to_install_it(tmp_path):
    # Ray made unimportable in a fresh interpreter (sys.modules["ray"] = None): what a user without the extra sees.
    code = ("import sys; sys.modules['ray'] = None; from benchsuite.cli import main; "
            f"sys.exit(main(['matrix', 'lora-loaded-frozen', '--ray', '--json', {str(tmp_path / 'm.json')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "benchsuite matrix: --ray needs Ray, an optional extra of benchsuite: pip install 'benchsuite[ray]' "
        "(or pip install 'ray>=2.9' next to benchsuite)"]
    assert not (tmp_path / "m.json").exists()


def test_usage_errors_with_ray_are_one_line_and_immediate(capsys, tmp_path, cluster):
    from benchsuite.cli import main
    address = _address(cluster)
    assert main(["matrix", "lora-loaded-frozen", "--ray", "--jobs", "3"]) == 2
    assert "--jobs is for a local run" in capsys.readouterr().err
    assert main(["matrix", "lora-loaded-frozen", "--ray-workers", "2"]) == 2
    assert "--ray-workers goes with --ray" in capsys.readouterr().err
    t0 = time.monotonic()  # nothing listens on port 1: said at once, not after Ray's minutes of retries
    assert main(["matrix", "lora-loaded-frozen", "--ray", "127.0.0.1:1", "--json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ray 127.0.0.1:1: nothing answers there" in err and time.monotonic() - t0 < 30
    assert not (tmp_path / "m.json").exists()
    # The failed command left this process's Ray connection (the cluster fixture's) alone: its close() used
    # to shut it down, and the next Ray call here auto-started a default instance in /tmp/ray.
    assert cluster.ray.is_initialized() and _address(cluster) == address
    # --ray local while this process is connected already: a usage error, and the connection stays.
    assert main(["matrix", "lora-loaded-frozen", "--ray", "local", "--json", str(tmp_path / "m.json")]) == 2
    assert "--ray local: could not start a Ray cluster" in capsys.readouterr().err
    assert cluster.ray.is_initialized() and _address(cluster) == address


class BatchProber:
    """Statuses per release as a Ray prober would find them, recording which releases went out together."""

    def __init__(self, statuses):
        self.statuses, self.seen, self.batches = statuses, {}, []

    def prefetch(self, versions):
        todo = [v for v in versions if v not in self.seen]
        if todo:
            self.batches.append(todo)
        for v in todo:
            s = self.statuses[v]
            self.seen[v] = {"status": s or "unusable", **({"unusable": True} if s is None else {})}

    def status(self, v):
        self.prefetch([v])
        e = self.seen[v]
        return None if e.get("unusable") else e["status"]


@pytest.mark.parametrize("width", [1, 2, 4])
def test_parallel_bisect_finds_the_same_boundary_in_fewer_rounds(width):
    versions = [f"4.{i}.0" for i in range(30, 58)] + ["5.0.0", "5.1.0"]
    statuses = {v: ("reproduced" if v.startswith("4.") else "not-reproduced") for v in versions}
    statuses["4.56.0"] = statuses["4.57.0"] = None  # not installable
    sequential = BatchProber(statuses)
    expected = bisect(sequential, versions)
    prober = BatchProber(statuses)
    result = bisect_parallel(prober, versions, width)
    assert result == expected and result["first"] == "5.0.0" and result["unusable_between"] == ["4.56.0", "4.57.0"]
    assert all(len(b) <= max(2, width) for b in prober.batches)
    if width > 1:
        assert len(prober.batches) < len(sequential.batches)


@pytest.mark.network
def test_bisect_on_ray_finds_what_a_plain_bisect_finds(tmp_path, cluster):
    args = ["bisect", "reentrant-checkpoint-frozen-inputs", "--package", "transformers", "--from", "4.57.6",
            "--to", "5.0.0"]
    out = tmp_path / "b.json"
    proc = subprocess.run(CLI + args + ["--ray", _address(cluster), "--json", str(out)], capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["executor"]["kind"] == "ray" and data["kind"] == "bisect"
    assert data["result"]["found"] and data["result"]["first"] == "5.0.0"
    assert data["result"]["last_status"] == "reproduced" and data["result"]["first_status"] == "not-reproduced"
    assert all(e["environment"]["transformers"] == v for v, e in data["seen"].items())
