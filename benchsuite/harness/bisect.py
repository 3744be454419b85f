"""`benchsuite bisect`: the first release of a package where a case's status changes.

Released versions come from the package index (pip's own configuration: `pip index versions`).
Each probe builds (or reuses) a pinned environment and runs the case there. A release that cannot
be installed or imported, or whose run ends in error/crash/timeout, is reported as unusable and
stepped over, never taken as a status.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from . import report
from .envs import EnvError, ensure
from .run import run_cases

USABLE = {"reproduced", "not-reproduced", "fix-failed"}


def released_versions(package: str, lo: str | None, hi: str | None) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package],
                          capture_output=True, text=True)
    m = re.search(r"Available versions:\s*(.+)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"benchsuite bisect: could not list {package}'s releases from the package index: "
                         f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    out = []
    for v in m.group(1).split(","):
        try:
            ver = Version(v.strip())
        except InvalidVersion:
            continue
        if ver.is_prerelease or ver.is_devrelease:
            continue
        if (lo and ver < Version(lo)) or (hi and ver > Version(hi)):
            continue
        out.append(ver)
    return [str(v) for v in sorted(set(out))]


class Prober:
    def __init__(self, path: Path, package: str, extra: list[str], timeout: float, log):
        self.path, self.package, self.extra, self.timeout, self.log = path, package, extra, timeout, log
        self.seen: dict[str, dict] = {}

    def status(self, version: str) -> str | None:
        """The case's status with package==version, or None when that release is unusable here."""
        if version not in self.seen:
            pins = [f"{self.package}=={version}"] + self.extra
            t0 = time.perf_counter()
            try:
                python = str(ensure(pins, log=self.log))
                r = run_cases([self.path], python=python, jobs=1, timeout=self.timeout)[0]
                entry = {"status": r.get("status"), "expected": r.get("expected"), "reason": r.get("reason")}
            except EnvError as exc:
                entry = {"status": "unusable", "reason": f"cannot be installed: {str(exc)[:300]}"}
            if entry["status"] not in USABLE:
                entry["unusable"] = True
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            self.seen[version] = entry
            self.log(f"  {self.package}=={version}: {entry['status']}"
                     + (f" (stepped over: {entry.get('reason')})" if entry.get("unusable") else ""))
        e = self.seen[version]
        return None if e.get("unusable") else ("reproduced" if e["status"] in ("reproduced", "fix-failed")
                                                else "not-reproduced")


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
    if lo is None or hi is None or lo >= hi:
        return {"found": False, "why": "fewer than two usable releases in the range"}
    s_lo, s_hi = prober.status(versions[lo]), prober.status(versions[hi])
    if s_lo == s_hi:
        return {"found": False, "why": f"{s_lo} at both ends ({versions[lo]} and {versions[hi]})",
                "status": s_lo}
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


def disagreements(affected: dict[str, str], package: str, seen: dict[str, dict]) -> list[str]:
    """Probed releases whose observed status contradicts the declared affected range."""
    spec = SpecifierSet(affected.get(package, ""))
    out = []
    for ver, e in sorted(seen.items(), key=lambda kv: Version(kv[0])):
        if e.get("unusable"):
            continue
        observed = e["status"] in ("reproduced", "fix-failed")
        if spec.contains(Version(ver), prereleases=True) != observed:
            out.append(f"{ver}: {e['status']} but declared {'affected' if not observed else 'not affected'}")
    return out


def correction(affected: dict[str, str], package: str, result: dict, seen: dict[str, dict],
               lo: str, hi: str) -> str | None:
    """A specifier that matches every probed release, when the declared one does not."""
    if not disagreements(affected, package, seen):
        return None
    if not result.get("found"):
        status = result.get("status")
        return f">={lo},<={hi}" if status == "reproduced" else f"<{lo}"
    first = result["first"]
    return f"<{first}" if result["last_status"] == "reproduced" else f">={first}"


def main(args) -> int:
    from .discover import default_cases_dir, load_case, resolve
    cases_dir = Path(args.cases_dir) if args.cases_dir else default_cases_dir()
    paths, unknown = resolve([args.id], cases_dir)
    if unknown:
        print(f"benchsuite bisect: {unknown[0][1]}", file=sys.stderr)
        return 2
    case = load_case(paths[0])
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    versions = released_versions(args.package, args.from_, args.to)
    if len(versions) < 2:
        print(f"benchsuite bisect: fewer than two {args.package} releases in the range", file=sys.stderr)
        return 2
    log(f"bisecting {case.id} over {len(versions)} {args.package} releases {versions[0]} .. {versions[-1]}")
    t0 = time.perf_counter()
    prober = Prober(paths[0], args.package, args.with_, args.timeout, log)
    result = bisect(prober, versions)
    fix = correction(case.affected, args.package, result, prober.seen, versions[0], versions[-1])
    out = {"case": case.id, "package": args.package, "range": [versions[0], versions[-1]],
           "releases": len(versions), "probes": len(prober.seen), "declared_affected": case.affected,
           "result": result, "seen": prober.seen, "suggested_affected": fix,
           "disagreements": disagreements(case.affected, args.package, prober.seen),
           "duration_s": round(time.perf_counter() - t0, 1)}
    if result.get("found"):
        print(f"{case.id}: {result['last_status']} at {args.package} {result['last']}, "
              f"{result['first_status']} from {result['first']} ({len(prober.seen)} of {len(versions)} releases probed)")
    else:
        print(f"{case.id}: no status change found: {result['why']}")
    print(f"declared affected: {case.affected or 'every version'}; "
          + (f"suggested within {versions[0]}..{versions[-1]}: {args.package}: {fix!r}" if fix
             else "every probed release agrees with it"))
    for d in out["disagreements"]:
        print(f"  differs: {d}")
    if args.json:
        report.write_atomic(args.json, json.dumps(out, indent=2, default=str))
    return 0
