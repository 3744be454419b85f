"""`benchsuite cache list|prune`: the pinned environments in $BENCHSUITE_CACHE (default ~/.cache/benchsuite)."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from .. import strictjson
from .envs import build_lock_path, cache_root
from .report import UsageError, check_output, version, write_atomic


def _size(path: Path) -> int:
    """The apparent size of a folder's files (each file once, as ls adds them up)."""
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def _inodes(path: Path) -> dict[tuple[int, int], tuple[int, int]]:
    """{(device, inode): (disk bytes, links)} of a folder's files: a hard-linked file (uv links the same
    torch files into every environment) is one entry, however many names it has."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for p in path.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        if not p.is_symlink() and p.is_file():
            out[(st.st_dev, st.st_ino)] = (st.st_blocks * 512, st.st_nlink)
    return out


def disk_usage(items: list[dict]) -> int:
    """What these entries take on disk together, each file counted once (as du counts them); sets each
    entry's ``disk_bytes``: what it adds beyond the entries listed before it."""
    seen: set[tuple[int, int]] = set()
    for e in items:
        files = _inodes(Path(e["path"]))
        e["disk_bytes"] = sum(b for k, (b, _) in files.items() if k not in seen)
        seen |= set(files)
    return sum(e["disk_bytes"] for e in items)


def freed_by(items: list[dict]) -> int:
    """The disk space removing these entries gives back: files none of whose names live elsewhere (uv's own
    cache keeps a link to every file it installed, so those stay)."""
    links: dict[tuple[int, int], list[int]] = {}
    for e in items:
        for k, (b, n) in _inodes(Path(e["path"])).items():
            links.setdefault(k, [b, n, 0])[2] += 1
    return sum(b for b, n, here in links.values() if here >= n)


def entries() -> list[dict]:
    root = cache_root()
    out = []
    for kind in ("envs", "overlay"):
        folder = root / kind
        if not folder.is_dir():
            continue
        for d in sorted(folder.iterdir()):
            if not d.is_dir():
                continue
            ready = d / ".ready"
            e = {"kind": "environment" if kind == "envs" else "overlay", "path": str(d), "bytes": _size(d)}
            if kind == "envs":
                e["ready"] = ready.exists()
                e["pins"] = ([ln for ln in ready.read_text().split()[1:] if "==" in ln] if e["ready"] else [])
                e["last_used"] = (ready if e["ready"] else d).stat().st_mtime
            else:
                e["ready"] = (d / "benchsuite" / "__init__.py").exists()
                e["last_used"] = d.stat().st_mtime
            out.append(e)
    return out


def _stale_ray_sessions(root: Path) -> list[dict]:
    """Session folders of local Ray clusters (`--ray local`) whose command is gone: a run removes its own
    when it ends, so one is left only by a command that was killed (SIGKILL)."""
    import os
    out = []
    folder = root / "ray"
    if not folder.is_dir():
        return out
    for d in sorted(folder.iterdir()):
        pid = d.name.split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            out.append({"kind": "ray-session", "path": str(d), "bytes": _size(d)})
            shutil.rmtree(d, ignore_errors=True)
    return out


def main(args) -> int:
    check_output(args.json, "--json")
    root = cache_root()
    say = (lambda m: print(m, file=sys.stderr)) if args.json == "-" else print
    if args.action == "list":
        if args.all or args.older_than is not None:
            raise UsageError("--all and --older-than go with `cache prune`")
        items = entries()
        say(f"cache: {root} (set BENCHSUITE_CACHE to move it)")
        for e in items:
            age = (time.time() - e["last_used"]) / 86400
            what = " ".join(e.get("pins") or []) if e["kind"] == "environment" else "benchsuite copy for environments"
            say(f"  {e['kind']:<11} {Path(e['path']).name}  {e['bytes'] / 2**20:8.0f} MiB  used {age:5.1f} d ago  "
                f"{what}{'' if e['ready'] else '  (unfinished)'}")
        on_disk = disk_usage(items)
        say(f"{len(items)} entr{'y' if len(items) == 1 else 'ies'}: {on_disk / 2**20:.0f} MiB on disk (files "
            f"shared between environments counted once, as du counts them; "
            f"{sum(e['bytes'] for e in items) / 2**20:.0f} MiB if each entry were a copy). "
            f"`cache prune` gives back {freed_by(items) / 2**20:.0f} MiB of it at most: uv's own cache "
            f"(UV_CACHE_DIR, default ~/.cache/uv) keeps a link to the files it installed.")
        if args.json:
            write_atomic(args.json, strictjson.dumps({"benchsuite_version": version(), "kind": "cache",
                                                      "root": str(root), "disk_bytes": on_disk, "entries": items}))
        return 0
    # prune: unfinished builds always; with --older-than, environments not used for that long; --all: everything
    items = entries()
    disk_usage(items)
    newest_overlay = max((e for e in items if e["kind"] == "overlay"), key=lambda e: e["last_used"], default=None)
    removed = []
    doomed = [e for e in items if args.all or not e["ready"] or e["kind"] == "overlay" and e is not newest_overlay
              or args.older_than is not None and time.time() - e["last_used"] > args.older_than * 86400]
    freed = freed_by(doomed)
    for e in doomed:
        shutil.rmtree(e["path"], ignore_errors=True)
        removed.append(e)
    for e in removed:
        if e["kind"] == "environment":
            build_lock_path(Path(e["path"])).unlink(missing_ok=True)
    if args.all:  # locks of environments removed by hand
        shutil.rmtree(root / "locks", ignore_errors=True)
    removed += _stale_ray_sessions(root)
    for e in removed:
        say(f"removed {e['path']} ({e['bytes'] / 2**20:.0f} MiB)")
    freed += sum(e["bytes"] for e in removed if e["kind"] == "ray-session")
    say(f"pruned {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, {freed / 2**20:.0f} MiB freed on disk "
        f"(files uv's cache also links stay there), in {root}")
    if args.json:
        write_atomic(args.json, strictjson.dumps({"benchsuite_version": version(), "kind": "cache-prune",
                                                  "root": str(root), "freed_bytes": freed, "removed": removed}))
    return 0
