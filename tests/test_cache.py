"""Issue 32: `cache list` counts what the disk holds (a file hard-linked into several environments once, as du
does), and `cache prune` says what it really gives back."""
from __future__ import annotations

import os
import subprocess
import sys

from strict import strict_loads


def _cli(cache, *args):
    return subprocess.run([sys.executable, "-m", "benchsuite", "cache", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "BENCHSUITE_CACHE": str(cache)})


def test_hard_linked_files_count_once_and_prune_frees_only_what_goes(tmp_path):
    cache, outside = tmp_path / "cache", tmp_path / "uv-cache"
    outside.mkdir()
    shared = outside / "torch.so"
    shared.write_bytes(os.urandom(1 << 20))  # 1 MiB that uv's cache keeps a link to
    for key in ("aaaa", "bbbb"):
        env = cache / "envs" / key
        (env / "lib").mkdir(parents=True)
        os.link(shared, env / "lib" / "torch.so")
        (env / "own.py").write_bytes(os.urandom(64 << 10))
        (env / ".ready").write_text("x transformers==5.0.0\n")
    r = _cli(cache, "list", "--json", str(tmp_path / "l.json"))
    assert r.returncode == 0, r.stderr
    doc = strict_loads((tmp_path / "l.json").read_text())
    du = int(subprocess.run(["du", "-sk", str(cache)], capture_output=True, text=True).stdout.split()[0]) * 1024
    assert abs(doc["disk_bytes"] - du) <= 64 << 10  # as du counts it (folders aside)
    assert sum(e["bytes"] for e in doc["entries"]) > doc["disk_bytes"] + (900 << 10)  # not once per environment
    assert "counted once, as du counts them" in r.stdout
    r = _cli(cache, "prune", "--all", "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    freed = strict_loads((tmp_path / "p.json").read_text())["freed_bytes"]
    assert (128 << 10) <= freed < (1 << 20)  # the two own files, not the file uv's cache still holds
    assert shared.exists()
