"""`benchsuite cache list|prune`: what $BENCHSUITE_CACHE (default ~/.cache/benchsuite) holds.

The pinned environments (envs/), the copies of benchsuite they import (overlay/) and uv's own cache (uv/,
where the harness points UV_CACHE_DIR unless the user set it). uv hard-links the files it installs from
its cache into every environment, so one torch file has a name in uv/ and in each environment: the sizes
here count each file once, as du does, and a prune reports what it gives back on disk."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from .. import strictjson
from ..common import envelope
from .envs import build_lock_path, cache_root, uv_cache_dir
from .report import UsageError, check_output, write_atomic

Inodes = dict[tuple[int, int], tuple[int, int]]


def _walk(path: Path) -> tuple[int, Inodes]:
    """The apparent size of a folder's files (each name, as ls adds them up) and {(device, inode): (disk
    bytes, links)} of those files: a hard-linked file is one entry, however many names it has."""
    apparent, out = 0, {}
    for p in [path, *path.rglob("*")]:
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_symlink():
            continue
        if p.is_file():
            apparent += st.st_size
            out[(st.st_dev, st.st_ino)] = (st.st_blocks * 512, st.st_nlink)
        elif p.is_dir():  # a folder's own blocks, as du counts them (its links are its subfolders' "..")
            out[(st.st_dev, st.st_ino)] = (st.st_blocks * 512, 1)
    return apparent, out


_FILES: dict[str, Inodes] = {}
OTHER = {"kernels": "the CUDA kernel as NVRTC compiled it for this machine's GPUs",
         "cudaemu": "the CUDA emulator's binaries (tests/test_cudaemu.py; BENCHSUITE_CUDAEMU_CACHE moves them)",
         "ray": "session folders of `--ray local` clusters (removed when their command ends)"}


def _inodes(e: dict) -> Inodes:
    if e["path"] not in _FILES:
        e["bytes"], _FILES[e["path"]] = _walk(Path(e["path"]))
    return _FILES[e["path"]]


def disk_usage(items: list[dict]) -> int:
    """What these entries take on disk together, each file counted once (as du counts them); sets each
    entry's ``disk_bytes``: what it adds beyond the entries listed before it."""
    seen: set[tuple[int, int]] = set()
    for e in items:
        files = _inodes(e)
        e["disk_bytes"] = sum(b for k, (b, _) in files.items() if k not in seen)
        seen |= set(files)
    return sum(e["disk_bytes"] for e in items)


def freed_by(items: list[dict]) -> int:
    """The disk space removing these entries gives back: the files none of whose names lives elsewhere (a
    file of an environment that uv's cache also links stays, unless uv's cache goes too). Sets each entry's
    ``freed_bytes``: its share (a freed file shared by several of them counts for the first)."""
    links: dict[tuple[int, int], list[int]] = {}
    for e in items:
        for k, (b, n) in _inodes(e).items():
            links.setdefault(k, [b, n, 0])[2] += 1
    gone = {k for k, (_, n, here) in links.items() if here >= n}
    for e in items:
        mine = gone & set(_inodes(e))
        e["freed_bytes"] = sum(links[k][0] for k in mine)
        gone -= mine
    return sum(e["freed_bytes"] for e in items)


def _uv_entry(root: Path) -> dict | None:
    uv = uv_cache_dir()
    if not uv.is_dir():
        return None
    inside = uv.resolve().is_relative_to(root.resolve())
    return {"kind": "uv-cache", "path": str(uv), "ready": True, "inside": inside, "last_used": uv.stat().st_mtime}


def entries() -> list[dict]:
    """uv's cache first (the environments' files are its files), then every environment and overlay."""
    root = cache_root()
    _FILES.clear()
    uv = _uv_entry(root)
    out = [uv] if uv else []
    for kind in ("envs", "overlay"):
        folder = root / kind
        if not folder.is_dir():
            continue
        for d in sorted(folder.iterdir()):
            if not d.is_dir():
                continue
            ready = d / ".ready"
            e: dict = {"kind": "environment" if kind == "envs" else "overlay", "path": str(d)}
            if kind == "envs":
                e["ready"] = ready.exists()
                e["pins"] = ([ln for ln in ready.read_text().split()[1:] if "==" in ln] if e["ready"] else [])
                e["last_used"] = (ready if e["ready"] else d).stat().st_mtime
            else:
                e["ready"] = (d / "benchsuite" / "__init__.py").exists()
                e["last_used"] = d.stat().st_mtime
            out.append(e)
    known = {"envs", "overlay", "locks"} | ({Path(uv["path"]).name} if uv and uv["inside"] else set())
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.is_dir() and d.name not in known:
            out.append({"kind": "other", "path": str(d), "ready": True, "last_used": d.stat().st_mtime})
    for e in out:
        _inodes(e)  # sets e["bytes"]
    return out


def _stale_ray_sessions(root: Path) -> list[dict]:
    """Session folders of local Ray clusters (`--ray local`) whose command is gone: a run removes its own
    when it ends, so one is left only by a command that was killed (SIGKILL)."""
    out: list[dict] = []
    folder = root / "ray"
    if not folder.is_dir():
        return out
    for d in sorted(folder.iterdir()):
        pid = d.name.split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            e: dict = {"kind": "ray-session", "path": str(d)}
            freed_by([e])
            out.append(e)
            shutil.rmtree(d, ignore_errors=True)
    return out


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _line(e: dict) -> str:
    if e["kind"] == "uv-cache":
        where = "" if e["inside"] else " (UV_CACHE_DIR, outside the cache folder)"
        return (f"  uv cache    {e['path']}{where}  {_mib(e['disk_bytes']):>9}  the packages uv downloaded and "
                f"unpacked: it hard-links their files into the environments")
    if e["kind"] == "other":
        what = OTHER.get(Path(e["path"]).name, "not benchsuite's")
        return f"  {'other':<11} {Path(e['path']).name:<16}  {_mib(e['disk_bytes']):>9}  {what}"
    age = (time.time() - e["last_used"]) / 86400
    what = " ".join(e.get("pins") or []) if e["kind"] == "environment" else "benchsuite copy for environments"
    shared = e["bytes"] - e["disk_bytes"]
    return (f"  {e['kind']:<11} {Path(e['path']).name}  {_mib(e['disk_bytes']):>9}  used {age:5.1f} d ago  {what}"
            + (f"  (+{_mib(shared)} hard-linked, counted above)" if shared > 2**20 else "")
            + ("" if e["ready"] else "  (unfinished)"))


def _list(root: Path, say, *, show_all, older_than, json_path) -> int:
    if show_all or older_than is not None:
        raise UsageError("--all and --older-than go with `cache prune`")
    items = entries()
    on_disk = disk_usage(items)
    say(f"cache: {root} (set BENCHSUITE_CACHE to move it)")
    for e in items:
        say(_line(e))
    default = freed_by(_doomed(items, all_=False, older_than=None))
    everything = freed_by(_doomed(items, all_=True, older_than=None))
    say(f"{len(items)} entr{'y' if len(items) == 1 else 'ies'}: {_mib(on_disk)} on disk. Each file is counted once, "
        f"as du counts it: a file that uv hard-links into several environments has one copy on disk "
        f"({_mib(sum(e['bytes'] for e in items))} if every name were a copy). "
        f"`cache prune` gives back {_mib(default)} (unfinished builds, stale benchsuite copies), "
        f"`cache prune --all` {_mib(everything)}"
        + ("" if not items or items[0]["kind"] != "uv-cache" or items[0]["inside"] else
           " (uv's cache is outside the cache folder: its files stay)") + ".")
    legacy = Path.home() / ".cache" / "uv"
    if "UV_CACHE_DIR" not in os.environ and legacy.is_dir() and legacy.resolve() != uv_cache_dir().resolve():
        say(f"{legacy} (uv's default cache) is not benchsuite's: environments built by earlier benchsuite "
            "versions hard-link files from it, new builds do not. `uv cache clean` empties it if nothing else of "
            "yours uses uv.")
    if json_path:
        write_atomic(json_path, strictjson.dumps(envelope("cache", {"root": str(root), "disk_bytes": on_disk,
                                                  "prune_frees_bytes": default, "prune_all_frees_bytes": everything,
                                                  "entries": items})))
    return 0


def _doomed(items: list[dict], all_: bool, older_than: float | None) -> list[dict]:
    """What a prune removes: unfinished builds and all but the newest benchsuite copy always; with
    ``older_than`` (days), environments not used for that long; ``all_``: everything, uv's cache too where
    it is inside the cache folder (a UV_CACHE_DIR of the user's own is theirs)."""
    newest_overlay = max((e for e in items if e["kind"] == "overlay"), key=lambda e: e["last_used"], default=None)

    def goes(e: dict) -> bool:
        if e["kind"] == "uv-cache":
            return all_ and e["inside"]
        if e["kind"] == "other":  # a live `--ray local` session stays; stale ones are removed below
            return all_ and Path(e["path"]).name != "ray"
        return (all_ or not e["ready"] or e["kind"] == "overlay" and e is not newest_overlay
                or older_than is not None and time.time() - e["last_used"] > older_than * 86400)
    return [e for e in items if goes(e)]


def _prune(root: Path, say, *, show_all, older_than, json_path) -> int:
    items = entries()
    disk_usage(items)
    removed = _doomed(items, show_all, older_than)
    freed = freed_by(removed)  # and each entry's share
    for e in removed:
        shutil.rmtree(e["path"], ignore_errors=True)
        if e["kind"] == "environment":
            build_lock_path(Path(e["path"])).unlink(missing_ok=True)
    if show_all:  # locks of environments removed by hand
        shutil.rmtree(root / "locks", ignore_errors=True)
    ray = _stale_ray_sessions(root)
    freed += sum(e["freed_bytes"] for e in ray)
    for e in removed + ray:
        say(f"removed {e['path']} ({_mib(e['freed_bytes'])} freed)")
    kept = " (files of the environments that uv's cache also links stay there)" if not show_all else ""
    say(f"pruned {len(removed) + len(ray)} entr{'y' if len(removed) + len(ray) == 1 else 'ies'}, {_mib(freed)} "
        f"freed on disk{kept}, in {root}")
    if json_path:
        doc = envelope("cache-prune", {"root": str(root), "freed_bytes": freed, "removed": removed + ray})
        write_atomic(json_path, strictjson.dumps(doc))
    return 0


def main(*, action: str, json_path: str | None = None, show_all: bool = False,
         older_than: float | None = None) -> int:
    check_output(json_path, "--json")
    root = cache_root()
    say = (lambda m: print(m, file=sys.stderr)) if json_path == "-" else print
    options = dict(show_all=show_all, older_than=older_than, json_path=json_path)
    return _list(root, say, **options) if action == "list" else _prune(root, say, **options)
