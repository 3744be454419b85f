"""The quick subset, chosen by measured time (issue 30): `pytest -m "not slow"`.

A test is slow when its setup and call took at least SLOW_SECONDS in the last recorded full run
(tests/durations.json), or when it uses a module- or session-wide fixture whose setup took that long in some
test (the first test to use a fixture pays for it; the others would pay in a run without it). A test the
file does not know yet is quick until the next recording. Record again after adding or speeding up tests:

    BENCHSUITE_RECORD_DURATIONS=tests/durations.json python -m pytest -n 0

Explicit `@pytest.mark.slow` marks stay and always count.

On two workers (`pytest -n 2`, the README's command; tests/conftest.py makes xdist's loadgroup the default there) the
same figures order the work: the tests that share a module-wide fixture of the project's go to one worker as one unit
(the fixture then runs once, not once per worker), and the units start longest first, so that no long test is left to
run alone at the end. The figures are recorded on one process: beside another worker each test takes longer.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SLOW_SECONDS = 3.0
FILE = Path(__file__).with_name("durations.json")


def _wide_fixtures(item) -> list[str]:
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) or {}
    return sorted(name for name, d in defs.items() if d and d[-1].scope != "function"
                  and not getattr(d[-1].func, "__module__", "").startswith(("_pytest", "pytest")))  # the project's


def measured() -> dict:
    """tests/durations.json: nodeid -> {"setup", "call", "wide"}; {} when missing or unreadable."""
    try:
        return json.loads(FILE.read_text())
    except (OSError, ValueError):
        return {}


def mark_slow(items, measured: dict) -> None:
    if not measured:
        return
    expensive = {f for m in measured.values() if m["setup"] >= SLOW_SECONDS for f in m["wide"]}
    for item in items:
        m = measured.get(item.nodeid)
        if (m and m["setup"] + m["call"] >= SLOW_SECONDS) or expensive & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def _group(item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) if mark else None


def order_for_workers(items, measured: dict) -> None:
    """Under pytest-xdist: group the tests of a module-wide fixture, then put the units longest first (in place;
    the sort is stable). The order is computed from the collection and tests/durations.json alone, so every
    worker collects the same order, as xdist requires."""
    for item in items:
        if _group(item) is None and _wide_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    unit = {item.nodeid: _group(item) or item.nodeid for item in items}
    weight: dict[str, float] = {}
    for item in items:
        m = measured.get(item.nodeid) or {}
        weight[unit[item.nodeid]] = weight.get(unit[item.nodeid], 0.0) + m.get("setup", 0.0) + m.get("call", 0.0)
    items.sort(key=lambda item: -weight[unit[item.nodeid]])


class Recorder:
    """Writes each test's setup and call seconds and its wide fixtures to BENCHSUITE_RECORD_DURATIONS."""

    def __init__(self, path: str):
        self.path, self.seen, self.wide = Path(path), {}, {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items):
        self.wide = {item.nodeid: _wide_fixtures(item) for item in items}

    def pytest_runtest_logreport(self, report):
        entry = self.seen.setdefault(report.nodeid, {"setup": 0.0, "call": 0.0,
                                                     "wide": self.wide.get(report.nodeid, [])})
        if report.when in ("setup", "call"):
            entry[report.when] = round(report.duration, 2)

    def pytest_sessionfinish(self):
        old = {}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except ValueError:
                old = {}
        old.update(self.seen)
        lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(old.items())]
        self.path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def configure(config) -> None:
    path = os.environ.get("BENCHSUITE_RECORD_DURATIONS")
    if path and getattr(config.option, "numprocesses", None):
        # each test would take longer beside another worker's, and the slow marks would follow
        raise pytest.UsageError("BENCHSUITE_RECORD_DURATIONS: record on one process (add -n 0)")
    if path:
        config.pluginmanager.register(Recorder(path), "benchsuite-durations")
