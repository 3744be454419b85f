"""Issue 32: `cache list` counts what the disk holds (a file hard-linked into several environments once, as du
does), shows uv's cache (under $BENCHSUITE_CACHE/uv) as its own line, and `cache prune` frees what it says; the
tests write only to their own cache (tests/conftest.py), never the user's."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import TEST_CACHE
from strict import strict_loads

ROOT = Path(__file__).resolve().parents[2]


def _cli(cache, *args, uv=None):
    env = {k: v for k, v in os.environ.items() if k != "UV_CACHE_DIR"}
    env["BENCHSUITE_CACHE"] = str(cache)
    if uv:
        env["UV_CACHE_DIR"] = str(uv)
    return subprocess.run([sys.executable, "-m", "benchsuite", "cache", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _du(*paths) -> int:
    """du's total for these folders (a file with names in several counted once)."""
    out = subprocess.run(["du", "-skc", *map(str, paths)], capture_output=True, text=True).stdout
    return int(out.splitlines()[-1].split()[0]) * 1024


def _two_environments(cache, uv):
    """Two environments whose torch.so is one file, hard-linked from uv's cache as uv installs it."""
    uv.mkdir(parents=True)
    shared = uv / "torch.so"
    shared.write_bytes(os.urandom(1 << 20))
    for key in ("aaaa", "bbbb"):
        env = cache / "envs" / key
        (env / "lib").mkdir(parents=True)
        os.link(shared, env / "lib" / "torch.so")
        (env / "own.py").write_bytes(os.urandom(64 << 10))
        (env / ".ready").write_text("x transformers==5.0.0\n")
    return shared


def test_hard_linked_files_count_once_and_prune_frees_only_what_goes(tmp_path):
    cache, outside = tmp_path / "cache", tmp_path / "uv-cache"  # a UV_CACHE_DIR of the user's own
    shared = _two_environments(cache, outside)
    r = _cli(cache, "list", "--json", str(tmp_path / "l.json"), uv=outside)
    assert r.returncode == 0, r.stderr
    doc = strict_loads((tmp_path / "l.json").read_text())
    envs = [e for e in doc["entries"] if e["kind"] == "environment"]
    assert abs(doc["disk_bytes"] - _du(outside, cache)) <= 16 << 10  # as du counts uv's cache and this one
    assert sum(e["bytes"] for e in envs) > sum(e["disk_bytes"] for e in envs) + (900 << 10)  # not once per env
    assert "counted once, as du counts it" in r.stdout and "uv hard-links" in r.stdout
    uv = [e for e in doc["entries"] if e["kind"] == "uv-cache"]
    assert len(uv) == 1 and not uv[0]["inside"] and "outside the cache folder" in r.stdout
    r = _cli(cache, "prune", "--all", "--json", str(tmp_path / "p.json"), uv=outside)
    assert r.returncode == 0, r.stderr
    freed = strict_loads((tmp_path / "p.json").read_text())["freed_bytes"]
    assert (128 << 10) <= freed < (1 << 20)  # the two own files, not the file the user's uv cache still holds
    assert shared.exists() and outside.exists()


def test_uv_cache_inside_is_its_own_line_and_prune_frees_what_it_says(tmp_path):
    cache = tmp_path / "cache"
    _two_environments(cache, cache / "uv")
    r = _cli(cache, "list", "--json", str(tmp_path / "l.json"))
    assert r.returncode == 0, r.stderr
    doc = strict_loads((tmp_path / "l.json").read_text())
    assert [e["kind"] for e in doc["entries"]] == ["uv-cache", "environment", "environment"]
    uv_line = next(ln for ln in r.stdout.splitlines() if ln.lstrip().startswith("uv cache"))
    assert str(cache / "uv") in uv_line and "outside" not in uv_line
    before = _du(cache)
    assert abs(doc["disk_bytes"] - before) <= 16 << 10  # the whole folder, uv's cache included, as du says
    # Environments alone give back only their own files: the shared one stays in uv's cache.
    r = _cli(cache, "prune", "--older-than", "0", "--json", str(tmp_path / "p.json"))
    freed = strict_loads((tmp_path / "p.json").read_text())["freed_bytes"]
    assert r.returncode == 0 and (128 << 10) <= freed < (1 << 20), r.stdout + r.stderr
    assert abs((before - _du(cache)) - freed) <= 16 << 10  # what it says it freed is what du sees go
    assert (cache / "uv" / "torch.so").exists() and not (cache / "envs" / "aaaa").exists()
    # --all takes uv's cache too, and then its files are freed.
    before = _du(cache)
    r = _cli(cache, "prune", "--all", "--json", str(tmp_path / "p2.json"))
    doc = strict_loads((tmp_path / "p2.json").read_text())
    freed = doc["freed_bytes"]
    assert sum(e["freed_bytes"] for e in doc["removed"]) == freed  # each "removed ... (N MiB freed)" line's share
    assert r.returncode == 0 and freed >= 1 << 20 and not (cache / "uv").exists()
    assert abs((before - (_du(cache) if cache.exists() else 0)) - freed) <= 16 << 10


def test_every_uv_call_gets_uv_cache_under_benchsuite_cache_unless_the_user_set_one(tmp_path, monkeypatch):
    from benchsuite.harness import envs
    seen = []

    def fake_run(cmd, **kw):
        seen.append(kw["env"]["UV_CACHE_DIR"])
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(envs.subprocess, "run", fake_run)
    monkeypatch.setenv("BENCHSUITE_CACHE", str(tmp_path / "bc"))
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    envs._run(["uv", "pip", "install", "x"], "install x")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "mine"))
    envs._run(["uv", "venv", "v"], "create the virtualenv")
    assert seen == [str(tmp_path / "bc" / "uv"), str(tmp_path / "mine")]


def test_the_tests_use_their_own_cache():
    """What the sentinel run below checks from outside: inside pytest every cache is the tests' own."""
    from benchsuite.harness.envs import cache_root, overlay, uv_cache_dir
    assert cache_root() == TEST_CACHE and uv_cache_dir() == TEST_CACHE / "uv"
    assert Path(os.environ["MPLCONFIGDIR"]).is_relative_to(TEST_CACHE)
    assert overlay().is_relative_to(TEST_CACHE)  # the copy of benchsuite the environments import: a real write
    assert Path(os.environ["BENCHSUITE_CUDAEMU_CACHE"]).is_relative_to(TEST_CACHE)
    try:
        import test_cudaemu
    except BaseException:  # skipped at import where g++ is missing
        return
    assert test_cudaemu.CACHE.is_relative_to(TEST_CACHE)


def test_a_test_run_leaves_the_users_home_and_cache_untouched(tmp_path):
    """pytest run in a subprocess whose HOME and BENCHSUITE_CACHE are sentinel folders: the tests that write
    through the harness's cache (above), plot with matplotlib and build CLI caches write nothing there."""
    home, user_cache, test_cache = tmp_path / "home", tmp_path / "user-cache", tmp_path / "test-cache"
    home.mkdir()
    user_cache.mkdir()
    env = {**os.environ, "HOME": str(home), "BENCHSUITE_CACHE": str(user_cache), "UV_CACHE_DIR": str(user_cache / "uv"),
           "BENCHSUITE_TEST_CACHE": str(test_cache), "XDG_CACHE_HOME": str(home / ".cache")}
    env.pop("MPLCONFIGDIR", None)
    env.pop("BENCHSUITE_CUDAEMU_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                           str(tmp_path / "basetemp"),  # not pytest's default /tmp/pytest-of-USER, left behind
                           "tests/harness/test_cache.py::test_the_tests_use_their_own_cache",
                           "tests/harness/test_cache.py::test_hard_linked_files_count_once_and_prune_frees_only_what_goes",
                           "tests/bench/test_bench.py::test_plot_shows_only_the_series_that_ran"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 passed" in proc.stdout, proc.stdout[-2000:]
    assert list(home.rglob("*")) == [] and list(user_cache.rglob("*")) == []
    assert (test_cache / "overlay").is_dir() and (test_cache / "matplotlib").is_dir()
