"""Issue 28: the catalogue published for tools (OSV records) and people (a static site, checked in headless
Chromium from the Debian packages)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from strict import strict_loads

from benchsuite.commands import site as site_command
from benchsuite.harness.discover import case_files, default_cases_dir
from benchsuite.publish.osv import _events, reference

# The OSV schema (ossf/osv-schema validation/schema.json) where one is provided: $OSV_SCHEMA, or shared/.
SCHEMA = next((p for p in (os.environ.get("OSV_SCHEMA"),
                           str(Path(__file__).resolve().parents[3] / "shared" / "osv-schema.json")) if p and
               Path(p).is_file()), None)
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchsuite", *args], capture_output=True, text=True, timeout=600)


def test_specifiers_become_osv_events():
    assert _events(">=4.35,<5") == [{"introduced": "4.35"}, {"fixed": "5"}]
    assert _events("<0.12") == [{"introduced": "0"}, {"fixed": "0.12"}]
    assert _events(">=5") == [{"introduced": "5"}]
    assert _events("==4.35.2") == [{"introduced": "4.35.2"}, {"last_affected": "4.35.2"}]
    assert _events("<=4.57.6") == [{"introduced": "0"}, {"last_affected": "4.57.6"}]
    assert _events("!=4.40.0") is None
    assert reference("huggingface/peft#282")["url"] == "https://github.com/huggingface/peft/issues/282"


def test_every_case_exports_a_valid_osv_record(tmp_path):
    r = cli("export", "--osv", str(tmp_path / "osv"))
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "osv").glob("*.json"))
    assert len(files) == len(case_files(default_cases_dir()))
    validator = None
    if SCHEMA:
        import jsonschema
        schema = json.loads(Path(SCHEMA).read_text())
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for f in files:
        rec = strict_loads(f.read_text())
        if validator is not None:
            errors = [e.message for e in validator.iter_errors(rec)]
            assert not errors, f"{f.name}: {errors[:3]}"
        # what the schema requires of every record, checked without it too
        assert rec["id"].startswith("x_benchsuite-") and RFC3339.fullmatch(rec["modified"]), f.name
        assert rec["summary"] and rec["references"] and all(x["type"] in ("REPORT", "WEB") for x in rec["references"])
        for a in rec.get("affected", []):
            assert a["package"]["ecosystem"] == "PyPI" and a["package"]["name"]
            for rng in a["ranges"]:
                assert rng["type"] == "ECOSYSTEM" and "introduced" in rng["events"][0]
                assert all(len(e) == 1 and set(e) <= {"introduced", "fixed", "last_affected"} for e in rng["events"])
        if not rec.get("affected"):
            assert rec["database_specific"]["every_version"] or rec["database_specific"].get("affected")
    one = strict_loads((tmp_path / "osv" / "x_benchsuite-peft-trainer-eval-loss-missing.json").read_text())
    assert one["affected"][0]["ranges"][0]["events"] == [{"introduced": "0"}, {"fixed": "4.55.0"}]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _dom(browser: str, url: str, tmp_path: Path) -> str:
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
                        "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.skipif(_chromium() is None, reason="needs headless Chromium (Debian's chromium; .ci/run installs it)")
def test_the_site_opens_in_a_browser_with_one_row_per_case_and_links_that_work(tmp_path):
    site = tmp_path / "site"
    r = cli("site", str(site))
    assert r.returncode == 0, r.stderr
    browser = _chromium()
    dom = _dom(browser, (site / "index.html").as_uri(), tmp_path)
    rows = re.findall(r'<tr class="case"', dom)
    assert len(rows) == len(case_files(default_cases_dir()))
    assert re.search(r'<span id="shown">\d+</span>', dom)
    link = re.search(r'<a href="(cases/[^"]+\.html)">([^<]+)</a>', dom)
    page = _dom(browser, (site / link.group(1)).as_uri(), tmp_path)
    assert f"<h1>{link.group(2)}</h1>" in page and f"benchsuite run {link.group(2)}" in page
    assert "Trigger" in page and "References" in page


def test_a_site_of_a_named_matrix_still_shows_the_last_run(tmp_path):
    # refresh --write rebuilds the site naming its matrix: the case pages keep the recorded run's evidence
    # (docs/results/catalogue-run.json, the --run default), as `benchsuite site DIR` alone shows it
    results = default_cases_dir().resolve().parent / "docs" / "results"
    assert site_command.build(tmp_path, default_cases_dir(), [results / "matrix-all.json"], None) == 0
    page = (tmp_path / "cases" / "lora-loaded-frozen.html").read_text()
    assert "No run result was given" not in page and "Status <b>reproduced</b>" in page
