"""A stream of Ray tasks (rayexec.cell_task), each a pinned environment and some cases: submitted a few at a
time, their events yielded as they arrive, lost tasks reported with the cases they never ran, cancelled
tasks' processes swept from their nodes. The executor (executor.run_on_ray) and bisect's Ray probes read it."""
from __future__ import annotations

import time

from .rayexec import Cluster, cell_task, sweep


def _remote(ray):
    return ray.remote(cell_task)


def describe_failure(exc: BaseException) -> str:
    """One line for a task that Ray could not finish: the worker crashed or was killed, its node died,
    or the task itself raised (then the last line of its traceback)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    name = type(exc).__name__
    if name.startswith("RayTaskError") and lines:
        line = lines[-1]
    else:
        line = lines[0] if lines else ""
    return f"{name}: {line[:300]}" if line else name


# ---------------------------------------------------------------- the driver

class TaskStream:
    """Submits tasks (at most ``cluster.workers`` at a time) and yields their events as they arrive.

    Each task is (key, pins, {id: source}, gpu); events come as (key, event). A task Ray could not finish
    yields (key, {"event": "lost", "reason": ..., "missing": [ids it never reported]})."""

    def __init__(self, cluster: Cluster, timeout: float, repeat: int):
        self.cluster, self.timeout, self.repeat = cluster, timeout, repeat
        self.ray = cluster.ray
        self.fn = _remote(self.ray)
        self.queue: list = []
        self.active: dict = {}
        self.killed: dict = {}  # (node id, folder) -> pids of workers killed with a task running

    def add(self, key, pins: list[str], sources: dict[str, str], gpu: bool = False) -> None:
        self.queue.append((key, pins, sources, gpu))

    def _submit(self) -> None:
        tmp_root = str(self.cluster.temp_dir) if self.cluster.temp_dir else None
        while self.queue and len(self.active) < self.cluster.workers:
            key, pins, sources, gpu = self.queue.pop(0)
            opts = {"num_cpus": 1, "max_retries": 0, **({"num_gpus": 1} if gpu else {})}
            gen = self.fn.options(**opts).remote(pins, sources, self.timeout, self.repeat, tmp_root)
            self.active[gen] = {"key": key, "pending": list(sources), "node": None, "node_id": None, "pid": None,
                                "folder": None}

    def __iter__(self):
        ray = self.ray
        try:
            while self.active or self.queue:
                try:
                    self._submit()
                    ready, _ = ray.wait(list(self.active), num_returns=1, timeout=1.0)
                except Exception as exc:  # the cluster itself went away (its head, the connection)
                    reason = f"the Ray cluster could not be reached: {describe_failure(exc)}"
                    for st in list(self.active.values()) + [{"key": q[0], "pending": list(q[2]), "node": None}
                                                            for q in self.queue]:
                        if st["pending"]:
                            yield st["key"], {"event": "lost", "missing": st["pending"], "node": st["node"],
                                              "reason": reason}
                    self.active.clear()
                    self.queue.clear()
                    return
                for gen in ready:
                    st = self.active[gen]
                    try:
                        ref = next(gen)
                    except StopIteration:
                        del self.active[gen]
                        if st["pending"]:
                            yield st["key"], {"event": "lost", "missing": st["pending"], "node": st["node"],
                                              "reason": "the Ray task ended without reporting it"}
                        continue
                    try:
                        ev = ray.get(ref)
                    except Exception as exc:
                        del self.active[gen]
                        self._killed(st)
                        yield st["key"], {"event": "lost", "missing": st["pending"], "node": st["node"],
                                          "reason": describe_failure(exc)}
                        continue
                    if ev.get("event") == "start":
                        st.update(node=ev.get("node"), node_id=ev.get("node_id"), pid=ev.get("pid"),
                                  folder=ev.get("folder"))
                    elif ev.get("event") == "result":
                        cid = ev["result"].get("id")
                        if cid in st["pending"]:
                            st["pending"].remove(cid)
                    elif ev.get("event") == "env-error":
                        ev["missing"], st["pending"] = st["pending"], []
                    yield st["key"], {**ev, "node": ev.get("node", st["node"])}
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop the tasks still running (Ctrl-C, an error in the driver): their workers are killed, and
        with them the runners and cases they started; a task that has reported all its cases is only
        cleaning up and is given a few seconds to finish. Then each node's task folders of the killed
        workers are removed (a sweep task on that node)."""
        ray = self.ray
        finishing = [g for g, st in self.active.items() if not st["pending"]]
        for gen, st in list(self.active.items()):
            if gen in finishing:
                continue
            try:
                ray.cancel(gen, force=True)
            except Exception:
                pass
            self._killed(st)
        deadline = time.monotonic() + 10
        while finishing and time.monotonic() < deadline:
            ready, _ = ray.wait(finishing, num_returns=1, timeout=0.5)
            for gen in ready:
                try:
                    ray.get(next(gen))
                except StopIteration:
                    finishing.remove(gen)
                except Exception:
                    finishing.remove(gen)
                    self._killed(self.active[gen])
        for gen in finishing:
            try:
                ray.cancel(gen, force=True)
            except Exception:
                pass
            self._killed(self.active[gen])
        self.active.clear()
        self.queue.clear()
        self.sweep()

    def _killed(self, st: dict) -> None:
        if st.get("node_id") and st.get("pid"):
            self.killed.setdefault((st["node_id"], st["folder"]), []).append(st["pid"])

    def sweep(self) -> None:
        """Remove the folders of the tasks whose workers were killed, with a task on each of their nodes
        (skipped for a local cluster: its session folder, where they are, is removed at the end)."""
        if not self.killed or self.cluster.temp_dir is not None:
            self.killed.clear()
            return
        killed, self.killed = self.killed, {}
        try:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            fn = self.ray.remote(sweep)
            refs = [fn.options(num_cpus=0, max_retries=0,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
                               ).remote(folder, pids, 15.0)
                    for (node_id, folder), pids in killed.items()]
            self.ray.wait(refs, num_returns=len(refs), timeout=30)
        except Exception:  # a node that is gone has nothing left to sweep; the next task there sweeps the rest
            pass
