"""`benchsuite bisect`: the first release of a package where a case's status changes.

Released versions come from the package index (pip's own configuration: `pip index versions`).
Each probe builds (or reuses) a pinned environment and runs the case there. A release that cannot
be installed or imported, or whose run ends in error/crash/timeout, is reported as unusable and
stepped over, never taken as a status.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from .. import strictjson
from ..common import envelope
from . import executor, rayexec, report
from .declared import rewrite_affected, write_range  # noqa: F401 (re-exported)
from .discover import load_case, resolve
from .envs import EnvError, index_versions, parse_pins
from .raytasks import TaskStream
from .report import UsageError, check_output

USABLE = {"reproduced", "not-reproduced", "fix-failed"}


def released_versions(package: str, lo: str | None, hi: str | None) -> list[str]:
    try:
        releases = index_versions(package)
    except EnvError as exc:
        raise UsageError(str(exc)) from None
    return [v for v in releases if not (lo and Version(v) < Version(lo)) and not (hi and Version(v) > Version(hi))]


def _version_arg(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        return str(Version(text))
    except InvalidVersion:
        raise UsageError(f"{option} {text!r}: not a version (e.g. 4.30.0)") from None


class Prober:
    def __init__(self, path: Path, package: str, extra: list[str], timeout: float, log):
        self.path, self.package, self.extra, self.timeout, self.log = path, package, extra, timeout, log
        self.seen: dict[str, dict] = {}

    def pins(self, version: str) -> list[str]:
        return [f"{self.package}=={version}"] + self.extra

    def prefetch(self, versions: list[str]) -> None:
        """Probe these releases (here one after the other; RayProber runs them at once)."""
        for version in versions:
            if version in self.seen:
                continue
            t0 = time.perf_counter()
            entry = self._probe(version)
            self.record(version, entry, time.perf_counter() - t0)

    def _probe(self, version: str) -> dict:
        """The case run once with package==version (the executor's run_local): its entry."""
        got: dict = {}
        executor.run_local([self.path], [self.pins(version)], jobs=1, timeout=self.timeout, log=self.log,
                           progress_lines=False, on_result=lambda r, cell: got.setdefault("result", r),
                           on_env_error=lambda label, exc: got.setdefault("env_error", exc))
        if "env_error" in got:
            return {"status": "unusable", "reason": f"cannot be installed: {str(got['env_error'])[:300]}"}
        return self.entry(got["result"])

    @staticmethod
    def entry(r: dict) -> dict:
        return {"status": r.get("status"), "expected": r.get("expected"), "reason": r.get("reason"),
                "environment": {k: v for k, v in (r.get("environment") or {}).items()
                                if k in ("transformers", "peft", "accelerate", "trl", "torch")}}

    def record(self, version: str, entry: dict, seconds: float) -> None:
        if entry["status"] not in USABLE:
            entry["unusable"] = True
        entry["seconds"] = round(seconds, 1)
        self.seen[version] = entry
        self.log(f"  {self.package}=={version}: {entry['status']}"
                 + (f" (stepped over: {entry.get('reason')})" if entry.get("unusable") else ""))

    def status(self, version: str) -> str | None:
        """The case's status with package==version, or None when that release is unusable here."""
        if version not in self.seen:
            self.prefetch([version])
        e = self.seen[version]
        return None if e.get("unusable") else ("reproduced" if e["status"] in ("reproduced", "fix-failed")
                                                else "not-reproduced")


class RayProber(Prober):
    """Probes as Ray tasks, several at once: each builds (or reuses) its environment on the worker."""

    def __init__(self, cluster, path: Path, package: str, extra: list[str], timeout: float, log):
        super().__init__(path, package, extra, timeout, log)
        self.cluster = cluster
        self.source = path.read_text()

    def prefetch(self, versions: list[str]) -> None:
        todo = [v for v in dict.fromkeys(versions) if v not in self.seen]
        if not todo:
            return
        stream = TaskStream(self.cluster, self.timeout, 1)
        t0 = time.perf_counter()
        for v in todo:
            stream.add(v, self.pins(v), {self.path.stem: self.source})
        for v, ev in stream:
            if ev["event"] == "result":
                self.record(v, self.entry(ev["result"]), time.perf_counter() - t0)
            elif ev["event"] == "env-error":
                self.record(v, {"status": "unusable", "reason": f"cannot be installed: {ev['reason'][:300]}"},
                            time.perf_counter() - t0)
            elif ev["event"] == "lost":
                self.record(v, {"status": "error", "reason": f"the Ray task running this probe was lost on node "
                                                             f"{ev.get('node') or '(not started)'}: {ev['reason']}"},
                            time.perf_counter() - t0)


def _same_at_both_ends(prober: Prober, versions: list[str], lo: int | None, hi: int | None) -> dict | None:
    """The "not found" result when the usable ends (indices ``lo`` < ``hi``) are missing or agree, else None."""
    if lo is None or hi is None or lo >= hi:
        return {"found": False, "why": "fewer than two usable releases in the range"}
    s_lo, s_hi = prober.status(versions[lo]), prober.status(versions[hi])
    if s_lo == s_hi:
        return {"found": False, "why": f"{s_lo} at both ends ({versions[lo]} and {versions[hi]})",
                "status": s_lo}
    return None


def bisect(prober: Prober, versions: list[str]) -> dict:
    """Binary search for adjacent usable releases with different statuses (O(log n) probes)."""
    def usable_from(i, step, stop):
        while i != stop:
            if prober.status(versions[i]) is not None:
                return i
            i += step
        return None

    lo = usable_from(0, 1, len(versions))
    hi = usable_from(len(versions) - 1, -1, -1)
    no_change = _same_at_both_ends(prober, versions, lo, hi)
    if no_change is not None:
        return no_change
    s_lo, s_hi = prober.status(versions[lo]), prober.status(versions[hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        # Step over unusable releases, alternating outward from the middle.
        probe = None
        for off in range(0, hi - lo):
            for cand in (mid + off, mid - off):
                if lo < cand < hi and prober.status(versions[cand]) is not None:
                    probe = cand
                    break
            if probe is not None:
                break
        if probe is None:
            break  # only unusable releases between lo and hi
        if prober.status(versions[probe]) == s_lo:
            lo = probe
        else:
            hi = probe
    return {"found": True, "last": versions[lo], "last_status": s_lo, "first": versions[hi], "first_status": s_hi,
            "unusable_between": [v for v in versions[lo + 1:hi] if v in prober.seen]}


def bisect_parallel(prober: Prober, versions: list[str], width: int) -> dict:
    """The same search with ``width`` probes at a time (RayProber.prefetch runs them together): each
    round probes ``width`` releases evenly spaced between the last two usable ones whose statuses
    differ, so a round divides the range by ``width + 1``. The result has bisect()'s form."""
    width = max(1, width)
    n = len(versions)
    prober.prefetch([versions[0], versions[-1]])

    def first_usable(indices: list[int]) -> int | None:
        for k in range(0, len(indices), width):
            batch = indices[k:k + width]
            prober.prefetch([versions[i] for i in batch])
            for i in batch:
                if prober.status(versions[i]) is not None:
                    return i
        return None

    first = first_usable(list(range(n)))
    last = first_usable(list(range(n - 1, -1, -1)))
    no_change = _same_at_both_ends(prober, versions, first, last)
    if no_change is not None:
        return no_change
    assert first is not None and last is not None  # _same_at_both_ends answers when either is missing
    lo, hi = first, last
    s_lo, s_hi = prober.status(versions[lo]), prober.status(versions[hi])
    while hi - lo > 1:
        known = [i for i in range(lo + 1, hi) if versions[i] in prober.seen and prober.status(versions[i]) is not None]
        if known:  # narrow to the first change after lo among the probed releases
            for i in known:
                if prober.status(versions[i]) == s_lo:
                    lo = i
                else:
                    hi = i
                    break
            continue
        todo = [i for i in range(lo + 1, hi) if versions[i] not in prober.seen]
        if not todo:
            break  # only unusable releases between lo and hi
        picks = sorted({todo[min(len(todo) - 1, (j + 1) * len(todo) // (width + 1))] for j in range(width)})
        prober.prefetch([versions[i] for i in picks])
    return {"found": True, "last": versions[lo], "last_status": s_lo, "first": versions[hi], "first_status": s_hi,
            "unusable_between": [v for v in versions[lo + 1:hi] if v in prober.seen]}


def _declared_affected(affected: dict[str, str], package: str, ver: str, e: dict) -> bool | None:
    """What the case's declaration predicts for one probe: from every declared package's version in that
    probe's environment (the harness's own "expected"), else from the bisected package's range alone."""
    if e.get("expected") in ("reproduced", "not-reproduced"):
        return e["expected"] == "reproduced"
    if package in affected or not affected:
        return SpecifierSet(affected.get(package, "")).contains(Version(ver), prereleases=True)
    return None  # the case declares other packages only and the probe did not say what they were


def disagreements(affected: dict[str, str], package: str, seen: dict[str, dict]) -> list[str]:
    """Probed releases whose observed status contradicts the case's declared affected versions."""
    out = []
    for ver, e in sorted(seen.items(), key=lambda kv: Version(kv[0])):
        if e.get("unusable"):
            continue
        declared = _declared_affected(affected, package, ver, e)
        if declared is None:
            continue
        observed = e["status"] in ("reproduced", "fix-failed")
        if declared != observed:
            others = {k: v for k, v in (e.get("environment") or {}).items() if k in affected and k != package}
            out.append(f"{ver}: {e['status']} but declared {'affected' if declared else 'not affected'}"
                       + (f" (with {', '.join(f'{k} {v}' for k, v in others.items())})" if others else ""))
    return out


def correction(affected: dict[str, str], package: str, result: dict, seen: dict[str, dict],
               lo: str, hi: str) -> str | None:
    """A specifier for ``package`` that matches every probed release, when the declaration does not.

    None when the declaration agrees with every probe, and None as well when the case declares no range
    for this package but does for others: the status change may then follow a companion package (a
    2024 transformers comes with a 2024 peft), and a range for this package would be a guess."""
    if not disagreements(affected, package, seen):
        return None
    if affected and package not in affected:
        return None
    if not result.get("found"):
        status = result.get("status")
        # reproduced at both ends: no probe says a later release is fixed, so the range stays open above
        return f">={lo}" if status == "reproduced" else f"<{lo}"
    first = result["first"]
    return f"<{first}" if result["last_status"] == "reproduced" else f">={first}"


def main(*, cases_dir: Path, case_id: str, package: str, from_: str | None = None, to: str | None = None,
         with_: list[str] | None = None, json_path: str | None = None, timeout: float = 300.0,
         ray: str | None = None, ray_workers: int | None = None, write: bool = False) -> int:
    paths, unknown = resolve([case_id], cases_dir)
    if unknown:
        raise UsageError(unknown[0][1])
    lo, hi = _version_arg(from_, "--from"), _version_arg(to, "--to")
    if lo and hi and Version(lo) > Version(hi):
        raise UsageError(f"--from {lo} is newer than --to {hi}")
    check_output(json_path, "--json")
    package = package.lower().replace("_", "-")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    extra = parse_pins(with_ or [], one_per_package=True, log=log)
    if package in extra:
        raise UsageError(f"--with {extra[package]}: {package} is the package being bisected")
    try:
        case = load_case(paths[0])
    except Exception as exc:
        raise UsageError(f"could not load case file {paths[0].name}: {type(exc).__name__}: {exc}") from None
    versions = released_versions(package, lo, hi)
    if len(versions) < 2:
        raise UsageError(f"fewer than two {package} releases in the range {lo or '-'} .. {hi or '-'}")
    log(f"bisecting {case.id} over {len(versions)} {package} releases {versions[0]} .. {versions[-1]}")
    declared_here = package in case.affected
    if not declared_here:
        declared = ("it declares " + ", ".join(f"{k}{v}" for k, v in case.affected.items()) if case.affected
                    else "every version is affected")
        log(f"note: {case.id} declares no range for {package} "
            f"({declared}); "
            "each probe is compared with what the declaration predicts for the versions installed in it")
    cluster = None
    executor = {"kind": "local"}
    if ray:
        cluster = rayexec.Cluster(ray, workers=ray_workers, log=log)
        executor = cluster.info()
    elif ray_workers:
        raise UsageError("--ray-workers goes with --ray")
    t0 = time.perf_counter()
    interrupted = False
    try:
        if cluster is not None:
            prober: Prober = RayProber(cluster, paths[0], package, list(extra.values()), timeout, log)
            log(f"probing {cluster.workers} release(s) at a time on Ray")
            result = bisect_parallel(prober, versions, cluster.workers)
        else:
            prober = Prober(paths[0], package, list(extra.values()), timeout, log)
            result = bisect(prober, versions)
    except KeyboardInterrupt:
        interrupted = True
        result = {"found": False, "why": "interrupted"}
        log("\ninterrupted: the probes that finished are kept")
    finally:
        if cluster is not None:
            cluster.close()
    fix = correction(case.affected, package, result, prober.seen, versions[0], versions[-1])
    differs = disagreements(case.affected, package, prober.seen)
    out = envelope("bisect", {"case": case.id, "package": package,
           "range": [versions[0], versions[-1]], "releases": len(versions), "probes": len(prober.seen),
           "declared_affected": case.affected, "package_declared": declared_here, "result": result,
           "seen": prober.seen, "suggested_affected": fix, "disagreements": differs,
           "agrees_with_declaration": not differs, "executor": executor,
           "duration_s": round(time.perf_counter() - t0, 1)})
    code, lines = verdict(case.id, case.affected, package, result, prober.seen, versions)
    say = (lambda m: print(m, file=sys.stderr)) if json_path == "-" else print
    for line in lines:
        say(line)
    if write and not interrupted:
        out["written"] = write_range(paths[0], case.affected, package, fix, result, say)
    if json_path:
        report.write_atomic(json_path, strictjson.dumps(out, indent=2, default=str))
    return 130 if interrupted else code


def companions_moved(a: dict, b: dict, package: str) -> str:
    """"peft 0.13.2 -> 0.14.0, trl - -> 0.19.0": every package other than ``package`` whose version differs
    between two probes (their environments resolved companions as of each release's date)."""
    ea, eb = a.get("environment") or {}, b.get("environment") or {}
    return ", ".join(f"{k} {ea.get(k) or '-'} -> {eb.get(k) or '-'}" for k in sorted(set(ea) | set(eb))
                     if k != package and ea.get(k) != eb.get(k))


def verdict(case_id: str, affected: dict[str, str], package: str, result: dict, seen: dict[str, dict],
            versions: list[str]) -> tuple[int, list[str]]:
    """(exit code, lines): 0 when every probe agrees with the case's declaration, 1 when one contradicts it."""
    lines = []
    if result.get("found"):
        lines.append(f"{case_id}: {result['last_status']} at {package} {result['last']}, "
                     f"{result['first_status']} from {result['first']} "
                     f"({len(seen)} of {len(versions)} releases probed)")
        moved = companions_moved(seen.get(result["last"]) or {}, seen.get(result["first"]) or {}, package)
        if moved:  # the change may come from a companion that moved with the bisected package
            lines.append(f"  between these two probes also: {moved}")
    else:
        lines.append(f"{case_id}: no status change found: {result['why']}")
    differs = disagreements(affected, package, seen)
    fix = correction(affected, package, result, seen, versions[0], versions[-1])
    declared = ", ".join(f"{k}{v}" for k, v in affected.items()) or "every version"
    if not differs:
        lines.append(f"declared affected: {declared}; every probed release agrees with it")
    elif fix:
        lines.append(f"declared affected: {declared}; DIFFERS; suggested within {versions[0]}..{versions[-1]}: "
                     f"{package}: {fix!r}")
    else:
        lines.append(f"declared affected: {declared}; DIFFERS; no {package} range suggested: the case declares "
                     f"{', '.join(affected)} only, and the change may follow a companion release (see each "
                     "probe's versions in --json)")
    lines += [f"  differs: {d}" for d in differs]
    return (1 if differs else 0), lines
