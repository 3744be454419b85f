"""Pinned environments: a virtualenv per set of pins, built with uv and reused from a cache.

torch is never resolved afresh: the environment gets the current torch version (from the local wheel
in PIP_FIND_LINKS when there is one, since uv does not read pip's configuration). benchsuite itself is
not rebuilt: the package and its compiled core are copied once into an overlay folder that the
environment sees through a .pth file (the core links no libtorch, so it serves every version).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from importlib.metadata import version
from pathlib import Path

DEFAULT_PACKAGES = ("transformers", "peft", "accelerate")
# Unpinned companions are held to releases from before the pinned packages' release plus this many
# days: today's peft imports names that a 2024 transformers does not have.
CONTEMPORARY_DAYS = 30


class EnvError(RuntimeError):
    """An environment that cannot be built; the message says why."""


def cache_root() -> Path:
    return Path(os.environ.get("BENCHSUITE_CACHE", Path.home() / ".cache" / "benchsuite"))


def uv_binary() -> str:
    try:
        from uv import find_uv_bin
        return find_uv_bin()
    except Exception:
        found = shutil.which("uv")
        if found:
            return found
    raise EnvError("uv is needed for pinned environments: pip install uv")


def find_links() -> list[str]:
    raw = os.environ.get("PIP_FIND_LINKS", "")
    return [p for p in raw.replace(",", " ").split() if p]


def torch_requirement() -> str:
    """The current torch, as a local wheel file when find-links has it, else pinned by version."""
    tv = version("torch")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for loc in find_links():
        folder = Path(loc.replace("file://", ""))
        if folder.is_dir():
            for whl in sorted(folder.glob(f"torch-{tv}-{tag}-*.whl")):
                return str(whl)
    return f"torch=={tv}"


def parse_pins(pins: list[str]) -> dict[str, str]:
    out = {}
    for pin in pins:
        if "==" not in pin:
            raise EnvError(f"--with takes NAME==VERSION, not {pin!r}")
        name, ver = pin.split("==", 1)
        name = name.strip().lower()
        if name == "torch" and ver.strip() != version("torch").split("+")[0]:
            raise EnvError("pinned environments reuse the current torch; torch cannot be pinned with --with")
        out[name] = ver.strip()
    return out


def release_date(package: str, ver: str) -> datetime.datetime | None:
    """Upload time of a release, from the index's JSON simple API (PEP 691/700); None if unavailable."""
    index = os.environ.get("PIP_INDEX_URL") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
    req = urllib.request.Request(f"{index.rstrip('/')}/{package}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            files = json.load(resp).get("files", [])
    except (OSError, ValueError):
        return None
    prefix = f"{package.replace('-', '_')}-{ver}"
    times = [f["upload-time"] for f in files
             if f.get("upload-time") and f["filename"].replace("-", "_").startswith(prefix.replace("-", "_"))
             and f["filename"][len(prefix):len(prefix) + 1] in ("-", ".")]
    if not times:
        return None
    return min(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times)


def contemporary_limits(pins: dict[str, str]) -> dict[str, str]:
    """--exclude-newer-package limits for the unpinned default packages, anchored on the pins' dates."""
    dates = [d for d in (release_date(k, v) for k, v in pins.items()) if d]
    if not dates:
        return {}
    limit = (max(dates) + datetime.timedelta(days=CONTEMPORARY_DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {p: limit for p in DEFAULT_PACKAGES if p not in pins}


def env_key(pins: dict[str, str]) -> str:
    text = "|".join([sys.version, version("torch"), f"contemporary{CONTEMPORARY_DAYS}", "setuptools<81"]
                    + [f"{k}=={v}" for k, v in sorted(pins.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def overlay() -> Path:
    """A copy of this benchsuite package and its compiled core, keyed by their contents."""
    import importlib.util
    pkg = Path(importlib.util.find_spec("benchsuite").origin).parent
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    core = importlib.util.find_spec("benchsuite._core")
    extra = [Path(core.origin)] if core and core.origin else []
    h = hashlib.sha256()
    for f in files + extra:
        h.update(str(f.relative_to(pkg) if f.is_relative_to(pkg) else f.name).encode())
        h.update(f.read_bytes())
    dest = cache_root() / "overlay" / h.hexdigest()[:16]
    if not (dest / "benchsuite" / "__init__.py").exists():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for f in files:
            target = tmp / "benchsuite" / f.relative_to(pkg)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        for f in extra:
            shutil.copy2(f, tmp / "benchsuite" / f.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _site_packages(venv: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib", vars={"base": "", "platbase": ""}).lstrip(os.sep))
    return venv / rel


def ensure(pins_list: list[str], log=print) -> Path:
    """Python executable of the environment with these pins, building it if needed."""
    pins = parse_pins(pins_list)
    venv = cache_root() / "envs" / env_key(pins)
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        uv = uv_binary()
        desc = ", ".join(f"{k}=={v}" for k, v in sorted(pins.items()))
        log(f"building environment [{desc}] in {venv} (torch {version('torch')} reused)")
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], "create the virtualenv")
        reqs = [torch_requirement()] + [f"{k}=={v}" for k, v in sorted(pins.items())]
        # setuptools: releases from before 2024 import pkg_resources, which uv's virtualenvs lack.
        reqs += [p for p in DEFAULT_PACKAGES if p not in pins] + ["packaging", "setuptools<81"]
        cmd = [uv, "pip", "install", "--quiet", "--python", str(python)] + reqs
        for loc in find_links():
            cmd += ["--find-links", loc]
        limits = contemporary_limits(pins)
        for package, limit in limits.items():
            cmd += ["--exclude-newer-package", f"{package}={limit}"]
        _run(cmd, f"install {' '.join(reqs[1:])}" + (f" (companions up to {next(iter(limits.values()))[:10]})"
                                                         if limits else ""))
        (venv / ".ready").write_text("\n".join(reqs) + "\n")
    site = _site_packages(venv)
    site.mkdir(parents=True, exist_ok=True)
    (site / "benchsuite_overlay.pth").write_text(str(overlay()) + "\n")
    return python


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise EnvError(f"could not {what}: {tail}")
