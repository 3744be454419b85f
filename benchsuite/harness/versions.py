"""The environment a case runs in, and whether its declared affected versions cover it."""
from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import Version

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate")


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict:
    env = {"python": platform.python_version(), **{p: installed(p) for p in PACKAGES}}
    env["executable"] = sys.executable
    try:  # a pinned environment records what its unpinned companions were resolved as of (envs.py)
        import json
        from pathlib import Path
        recorded = json.loads((Path(sys.prefix) / "benchsuite-resolution.json").read_text())
        env["resolved_as_of"] = recorded.get("resolved_as_of")
    except (OSError, ValueError):
        pass
    try:
        import torch
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover
        env["device"] = "unknown"
    return env


def _release(v: str) -> Version:
    # Local builds such as 2.13.0+cpu compare as their release.
    return Version(Version(v).base_version)


def is_affected(affected: dict[str, str], env: dict) -> bool:
    """True when every package named in ``affected`` is installed in a version its specifier admits."""
    for package, spec in affected.items():
        v = env.get(package) or installed(package)
        if v is None:
            return False
        if not SpecifierSet(spec).contains(_release(v), prereleases=True):
            return False
    return True
