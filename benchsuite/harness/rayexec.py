"""Matrix cells and bisect probes as Ray tasks: ``benchsuite matrix|bisect --ray [local|ADDRESS]``.

Each task is one pinned environment and some cases (a matrix "cell" of the task graph). It runs on a
Ray worker exactly what a local run does there: the environment is built (or reused) with uv in that
node's $BENCHSUITE_CACHE, the cases run in a runner process of that environment, each case and scenario
in its own forked process, under the harness's timeout. A task streams each case's result back as it
finishes (a Ray generator task), so the driver writes the reports after every case; a task whose worker
or node is lost marks the cases it had not reported ``error``, with Ray's reason, and the others go on.

``local`` starts a Ray cluster on this machine for the run: its session folder lives under
$BENCHSUITE_CACHE/ray (or $TMPDIR when that path is too long for Ray's unix sockets) and is removed,
with every process the cluster started, when the run ends (Ctrl-C included). ``ADDRESS`` is an existing
cluster (``auto``, ``HOST:PORT`` of its head or ``ray://HOST:10001``); benchsuite must be installed on
its nodes (the same version: each task reports the one it found).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from .envs import EnvError, cache_root, ensure
from .report import UsageError, version
from .runner import iter_results

INSTALL = ("--ray needs Ray, an optional extra of benchsuite: pip install 'benchsuite[ray]' "
           "(or pip install 'ray>=2.9' next to benchsuite)")
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


def _session_folder() -> Path:
    """A new folder for a local cluster's session. Ray puts unix sockets in it
    (``<dir>/session_<date>_<time>_<pid>/sockets/plasma_store``, at most 107 bytes in all), so it is
    $BENCHSUITE_CACHE/ray/<pid>-XXXXXXXX where that path is short enough, else $TMPDIR/benchsuite-ray-<pid>-XXXXXXXX."""
    pid = str(os.getpid())
    room = 107 - len("/session_2026-01-01_00-00-00_000000_") - len(pid) - len("/sockets/plasma_store")
    root = cache_root() / "ray"
    if len(str(root)) + len(f"/{pid}-XXXXXXXX") <= room:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{pid}-", dir=root))
    return Path(tempfile.mkdtemp(prefix=f"benchsuite-ray-{pid}-"))


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _reload_auth_config() -> None:
    """Make an already imported Ray see the RAY_AUTH_* variables just set (Ray reads them once, at import;
    ray.init's own default does the same)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # Ray >= 2.50
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # an older Ray without token authentication: nothing to reload
        pass


class Cluster:
    """A Ray cluster for one command: a local one started here, or an existing one at an address.

    Use as a context manager: leaving it disconnects, and for a local cluster stops every process it
    started and removes its session folder. Ray's connection is one per process: a Cluster that did not
    make it (its address did not answer, or Ray was already initialized here, by another Cluster) leaves
    it alone when it closes. Shutting down another Cluster's connection made the next Ray call in this
    process start a default Ray instance, in /tmp/ray, that nothing removed."""

    def __init__(self, address: str = "local", workers: int | None = None, log=None):
        self.ray = import_ray()
        self.log = log or (lambda m: None)
        self.address = address or "local"
        self.local = self.address == "local"
        self.temp_dir: Path | None = None
        self._saved_env: dict[str, str | None] = {}
        self._owns_ray = False  # this Cluster called ray.init with Ray not yet initialized: close() shuts it down
        self._before: set[int] | None = None
        t0 = time.perf_counter()
        try:
            if self.local:
                self._start_local(workers)
            else:
                self._connect()
        except BaseException:
            self.close()
            raise
        self.startup_s = round(time.perf_counter() - t0, 1)
        res = self.ray.cluster_resources()
        self.cpus = int(res.get("CPU", 0))
        self.gpus = int(res.get("GPU", 0))
        self.nodes = sum(1 for n in self.ray.nodes() if n.get("Alive"))
        self.workers = max(1, min(workers or self.cpus or 1, self.cpus or 1))
        self.log(f"ray: {'local cluster' if self.local else 'cluster at ' + self.address}: {self.nodes} node(s), "
                 f"{self.cpus} CPU(s), {self.gpus} GPU(s); {self.workers} task(s) at a time"
                 + (f" (started in {self.startup_s:.0f} s)" if self.local else ""))

    def _setenv(self, name: str, value: str) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def _init(self, **kwargs) -> None:
        self._owns_ray = not self.ray.is_initialized()  # else ray.init raises, and the connection is another's
        self.ray.init(**kwargs)

    def _start_local(self, workers: int | None) -> None:
        self.temp_dir = _session_folder()
        # Ray's default temp dir (/tmp/ray) for whatever falls back to it while the cluster runs, in this
        # process or in the cluster's (a driver auto-initialized by a Ray call, a worker's helper): the
        # session folder, removed with it.
        self._setenv("RAY_TMPDIR", str(self.temp_dir))
        if "RAY_USAGE_STATS_ENABLED" not in os.environ:
            self._setenv("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report, no prompt file
        if not any(v in os.environ for v in _AUTH_VARS):
            # Token authentication with a token for this run only (the cluster's processes and any driver
            # started from here inherit it): Ray's default would write one to ~/.ray/auth_token, outside
            # the cache, and keep it.
            self._setenv("RAY_AUTH_MODE", "token")
            self._setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
            _reload_auth_config()
        self._before = set(_children(os.getpid()))
        try:
            # address="local": a new cluster even where RAY_ADDRESS names another one.
            self._init(address="local", num_cpus=workers or os.cpu_count() or 1, _temp_dir=str(self.temp_dir),
                       include_dashboard=False, log_to_driver=False,
                       logging_level=logging.WARNING, object_store_memory=128 * 2**20)
        except Exception as exc:
            raise UsageError(f"--ray local: could not start a Ray cluster on this machine: {type(exc).__name__}: "
                             f"{str(exc).strip()[:400]}") from None

    def _connect(self) -> None:
        hostport = self.address.split("://", 1)[-1]
        if self.address != "auto" and ":" in hostport:
            # Ray retries an address where nothing answers for minutes; say so at once instead.
            host, _, port = hostport.rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
            except (OSError, ValueError) as exc:
                why = getattr(exc, "strerror", None) or exc
                raise UsageError(f"--ray {self.address}: nothing answers there ({why}); give the "
                                 "address of a running cluster's head (HOST:PORT, ray://HOST:10001), `auto` on one "
                                 "of its nodes, or `local`") from None
        try:
            self._init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:
            raise UsageError(f"--ray {self.address}: could not connect to a Ray cluster there: "
                             f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
                             " (give `local`, `auto` on a cluster node, HOST:PORT of its head or ray://HOST:10001)"
                             ) from None

    def info(self) -> dict:
        """What the reports say about the executor."""
        return {"kind": "ray", "address": self.address, "local_cluster": self.local,
                "ray_version": self.ray.__version__,
                "nodes": self.nodes, "cpus": self.cpus, "gpus": self.gpus, "workers": self.workers,
                "startup_s": self.startup_s}

    def close(self) -> None:
        before = self._before
        started = [p for p in _children(os.getpid()) if p not in before] if self.local and before is not None else []
        try:
            if self._owns_ray and self.ray.is_initialized():
                self.ray.shutdown()
            self._owns_ray = False
        finally:
            # The cluster's processes (GCS, raylet, their helpers) are this process's children: wait for
            # them to go and reap them, so that nothing, not even a zombie, is left.
            deadline = time.monotonic() + 15
            while any(_alive(p) for p in started) and time.monotonic() < deadline:
                time.sleep(0.1)
            for p in started:
                try:
                    os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    pass
            if self.temp_dir is not None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                self.temp_dir = None
            for name, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if any(name in _AUTH_VARS for name in self._saved_env):
                _reload_auth_config()
            self._saved_env = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- the task (runs on a Ray worker)

def cell_task(pins: list[str], sources: dict[str, str], timeout: float, repeat: int, tmp_root: str | None):
    """A Ray generator task: build/reuse the environment, run the cases one at a time, yield events.

    Events: {"event": "start", node...}, then {"event": "env", ...} or {"event": "env-error", "reason"},
    then one {"event": "result", "result": {...}} per case. ``sources``: {case id: file text}; the
    files are written into a temporary folder on the worker (under ``tmp_root`` for a local cluster,
    whose session folder is removed at the end even when this worker is killed)."""

    try:
        import ray
        node = ray.util.get_node_ip_address()
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover
        node = node_id = None
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    parent = tmp_root if tmp_root and os.path.isdir(tmp_root) else tempfile.gettempdir()
    sweep(parent, [])  # what workers killed earlier on this node left
    work = tempfile.mkdtemp(prefix=f"benchsuite-task-{os.getpid()}-", dir=parent)
    where = {"node": node, "node_id": node_id, "host": socket.gethostname(), "pid": os.getpid(),
             "folder": parent, "benchsuite_version": version()}
    yield {"event": "start", **where}
    # The runner's work folder and the cases' temporary files go in here too.
    os.environ["TMPDIR"] = work
    tempfile.tempdir = work
    try:
        folder = Path(work) / "cases"
        folder.mkdir()
        paths = []
        for cid, text in sources.items():
            (folder / f"{cid}.py").write_text(text)
            paths.append(folder / f"{cid}.py")
        messages: list[str] = []
        t0 = time.perf_counter()
        try:
            python = str(ensure(pins, log=messages.append)) if pins else sys.executable
        except EnvError as exc:
            yield {"event": "env-error", "reason": f"environment could not be built: {exc}", "log": messages}
            return
        yield {"event": "env", "seconds": round(time.perf_counter() - t0, 1), "log": messages}
        for r in iter_results(paths, python=python, jobs=1, timeout=timeout, repeat=repeat, threads=1):
            r.pop("file", None)  # the worker's temporary copy: meaningless to the driver
            yield {"event": "result", "result": r}
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        shutil.rmtree(work, ignore_errors=True)



def sweep(folder: str, pids: list[int], wait_s: float = 0.0) -> list[str]:
    """Remove the task folders (benchsuite-task-<pid>-*) in ``folder`` whose worker is gone: those of
    ``pids`` (waiting up to ``wait_s`` for them to die: a task cancelled with force=True is killed a moment
    later), and any other whose worker no longer exists. A task killed with its worker cannot clean up
    after itself; the next task on that node, or the sweep the driver runs after cancelling, does."""
    deadline = time.monotonic() + wait_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = re.fullmatch(r"benchsuite-task-(\d+)-.+", name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            removed.append(name)
    return removed
