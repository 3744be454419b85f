"""The catalogue cases that explain each finding of a watched run, best first: through the symptom vocabulary
doctor uses (benchsuite.diagnose.signs: a finding shows signs such as loss-nonfinite, loss-log2, lr-zero,
grad-norm-zero; cases declare ``signs=[...]``) and the findings cases declare they explain (``explains=``),
ranked by benchsuite.diagnose.ranking.by_log as `doctor --log` ranks them. Runs in `benchsuite watch` itself,
after the script, never in the watched process."""
from __future__ import annotations

from functools import lru_cache

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..diagnose import ranking
from ..harness.discover import case_files, default_cases_dir, load_case

LIMIT = 3


@lru_cache(maxsize=1)
def _rows() -> tuple:
    try:
        files = case_files(default_cases_dir())
    except Exception:
        return ()
    rows = []
    for path in files.values():
        try:
            rows.append(load_case(path).metadata())
        except Exception:
            continue
    return tuple(rows)


def _holds(specs: dict, versions: dict) -> bool:
    for package, spec in (specs or {}).items():
        v = versions.get(package)
        try:
            if not v or not SpecifierSet(spec).contains(Version(Version(v).base_version), prereleases=True):
                return False
        except (InvalidVersion, ValueError):
            return False
    return True


def for_finding(finding: dict, versions: dict) -> list[str]:
    """The ids of the cases that explain ``finding`` (its ``signs`` and kind), best first; those whose affected
    range holds for ``versions`` first among equals."""
    signs = {s: f"watch: {finding.get('title') or finding.get('kind')}" for s in finding.get("signs") or []}
    rows = [{**r, "category": "applies" if _holds(r.get("affected"), versions) and _holds(r.get("applies"), versions)
             else "not-affected"} for r in _rows()]
    matches = ranking.by_log({"signs": signs, "findings": [finding], "text": ""}, rows)
    return [m["id"] for m in matches[:LIMIT]]


def annotate(procs: list[dict]) -> None:
    """Adds ``cases`` (ids, best first) to every open finding of every process. Never raises."""
    for s in procs:
        versions = s.get("versions") or {}
        for f in s.get("findings") or []:
            if f.get("status") != "open":
                continue
            try:
                f["cases"] = for_finding(f, versions)
            except Exception:
                f["cases"] = []
