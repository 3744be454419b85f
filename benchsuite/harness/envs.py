"""Pinned environments: a virtualenv per set of pins, built with uv and reused from a cache.

torch is never resolved afresh: the environment gets the current torch version (from the local wheel
in PIP_FIND_LINKS when there is one, since uv does not read pip's configuration). benchsuite itself is
not rebuilt: the package and its compiled core are copied once into an overlay folder that the
environment sees through a .pth file (the core links no libtorch, so it serves every version).
"""
from __future__ import annotations

import compileall
import datetime
import fcntl
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..common import UsageError, cache_root

DEFAULT_PACKAGES = ("transformers", "peft", "accelerate")
# Unpinned companions are resolved as of the pinned releases' upload time (the newest of them): uv's
# --exclude-newer-package, per companion, gives the environment a user got by installing the pinned
# release on the day it came out. Today's peft imports names that a 2024 transformers does not have; a
# companion released after the pin may rely on what came after it, one released before cannot. (It was
# "upload time + 30 days" before issue 14; see docs/adding-a-case.md for the comparison.) torch is never
# held back: it is the current local build. The resolution date is recorded in the environment
# (RESOLUTION_FILE), and every result run there carries it as environment["resolved_as_of"].
RESOLUTION = "as-of-upload"
RESOLUTION_FILE = "benchsuite-resolution.json"


class EnvError(RuntimeError):
    """An environment that cannot be built; the message says why."""


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


def parse_requirement(text: str) -> tuple[str, str]:
    """(name, specifier) of one --with value: any PEP 508 requirement without extras, markers or URLs
    (``transformers==4.57.6``, ``transformers>=4.57,<5``, ``peft~=0.13.0``); UsageError otherwise."""

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise UsageError(f"--with {text!r}: not a requirement like NAME==VERSION or NAME>=A,<B "
                         f"({str(exc).splitlines()[0]})") from None
    if req.url or req.marker or req.extras:
        raise UsageError(f"--with {text!r}: extras, markers and URLs are not supported; give NAME and versions")
    if not str(req.specifier):
        raise UsageError(f"--with {text!r}: give a version (NAME==VERSION or a range such as NAME>=A,<B)")
    name = req.name.lower().replace("_", "-")
    if name == "torch":
        current = version("torch").split("+")[0]
        if not req.specifier.contains(current, prereleases=True):
            raise UsageError("pinned environments reuse the current torch; torch cannot be pinned with --with")
    return name, str(req.specifier)


def index_versions(package: str) -> list[str]:
    """Released versions of a package on the index (pip's own configuration), oldest first, final
    releases only; EnvError when the index cannot be asked."""

    proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package],
                          capture_output=True, text=True)
    m = re.search(r"Available versions:\s*(.+)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise EnvError(f"could not list {package}'s releases from the package index: "
                       f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    out = set()
    for v in m.group(1).split(","):
        try:
            ver = Version(v.strip())
        except InvalidVersion:
            continue
        if not (ver.is_prerelease or ver.is_devrelease):
            out.add(ver)
    return [str(v) for v in sorted(out)]


def exact_version(spec: str) -> str | None:
    """The version of a specifier that names exactly one (``==4.57.6``), else None."""
    items = list(SpecifierSet(spec))
    if len(items) == 1 and items[0].operator in ("==", "===") and "*" not in items[0].version:
        return items[0].version
    return None


def resolve_requirement(name: str, spec: str) -> str:
    """A concrete version for NAME+specifier: the version itself for ``==X``, else the newest final
    release on the index that the specifier admits (what uv would pick with nothing else pinned)."""

    exact = exact_version(spec)
    if exact:
        return exact
    try:
        releases = index_versions(name)
    except EnvError as exc:
        raise UsageError(f"--with {name}{spec}: {exc}") from None
    matching = [v for v in releases if SpecifierSet(spec).contains(v)]
    if not matching:
        newest = releases[-1] if releases else '-'
        raise UsageError(f"--with {name}{spec}: no {name} release matches (newest: {newest})")
    return matching[-1]


def parse_pins(pins: list[str], one_per_package: bool = False, log=None) -> dict[str, str]:
    """{name: "name==version"} for --with values, ranges resolved to a concrete release (logged).

    With ``one_per_package`` two values for one package are a usage error (one environment has one
    version of each package); otherwise the last one wins."""
    out: dict[str, str] = {}
    given: dict[str, str] = {}
    for pin in pins:
        name, spec = parse_requirement(pin)
        if one_per_package and name in given:
            raise UsageError(f"two --with values for {name} ({given[name]} and {pin}): one environment has one "
                             f"version of a package; `benchsuite matrix --with {name}==A,B` runs several")
        given[name] = pin
        ver = resolve_requirement(name, spec)
        if log and not exact_version(spec):
            log(f"{pin} -> {name}=={ver}")
        out[name] = f"{name}=={ver}"
    return out


def expand(with_args: list[str], log=None) -> list[list[str]]:
    """["transformers==4.40.2,4.57.6", "peft==0.10.0"] -> every combination, as lists of exact pins.

    A value is NAME==V1,V2,... (a list of releases) or one requirement such as 'NAME>=A,<B', resolved to
    the newest release it admits. Several values for one package are one axis (one environment per
    version), never merged into one environment."""
    axes: dict[str, list[str]] = {}
    for arg in with_args:
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^,<>=!~;\s]+(?:\s*,\s*[^,<>=!~;\s]+)+)\s*,?\s*",
                         arg)
        if m:  # a list of versions
            name = parse_requirement(f"{m.group(1)}=={m.group(2).split(',')[0].strip()}")[0]
            pins = []
            for v in (x.strip() for x in m.group(2).split(",")):
                try:
                    Version(v)
                except InvalidVersion:
                    raise UsageError(f"--with {arg!r}: {v!r} is not a version") from None
                pins.append(f"{name}=={v}")
        else:
            name, pin = next(iter(parse_pins([arg], log=log).items()))
            pins = [pin]
        axis = axes.setdefault(name, [])
        axis += [p for p in pins if p not in axis]
    return [list(c) for c in itertools.product(*axes.values())] if axes else [[]]


def _exact_pins(pins: list[str]) -> dict[str, str]:
    """{name: version} of pins that are already exact (NAME==VERSION)."""
    out = {}
    for pin in pins:
        name, spec = parse_requirement(pin)
        ver = exact_version(spec)
        if ver is None:
            raise EnvError(f"internal: pin {pin!r} is not resolved to one version")
        out[name] = ver
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


def resolution_date(pins: dict[str, str]) -> datetime.datetime | None:
    """The moment the environment is resolved as of: the newest upload time of the pinned releases
    (None when the index gives no date; companions are then the newest releases)."""
    dates = [d for d in (release_date(k, v) for k, v in pins.items()) if d]
    return max(dates) if dates else None


def contemporary_limits(pins: dict[str, str], as_of: datetime.datetime | None = None) -> dict[str, str]:
    """--exclude-newer-package limits for the unpinned default packages: releases uploaded up to the
    pinned releases' own upload time."""
    as_of = as_of if as_of is not None else resolution_date(pins)
    if as_of is None:
        return {}
    limit = as_of.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {p: limit for p in DEFAULT_PACKAGES if p not in pins}


def resolution_of(python: str | os.PathLike) -> dict:
    """What a pinned environment was resolved as of ({} for one built before this was recorded)."""
    try:
        return json.loads((Path(python).parent.parent / RESOLUTION_FILE).read_text())
    except (OSError, ValueError):
        return {}


def env_key(pins: dict[str, str]) -> str:
    text = "|".join([sys.version, version("torch"), RESOLUTION, "setuptools<81"]
                    + [f"{k}=={v}" for k, v in sorted(pins.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def overlay() -> Path:
    """A copy of this benchsuite package and its compiled core, keyed by their contents."""
    spec = importlib.util.find_spec("benchsuite")
    assert spec is not None and spec.origin is not None  # this very package
    pkg = Path(spec.origin).parent
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
        compileall.compile_dir(tmp, quiet=2)  # its bytecode, once (see managed())
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def managed(prefix: str | os.PathLike = sys.prefix) -> bool:
    """Whether this interpreter runs in one of the pinned environments (built here, RESOLUTION_FILE). Their
    bytecode is kept in the cache even under PYTHONDONTWRITEBYTECODE, which only means "not beside my
    sources": without it every process there compiled torch and transformers again, 15 s a start here."""
    return (Path(prefix) / RESOLUTION_FILE).exists()


def _site_packages(venv: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib", vars={"base": "", "platbase": ""}).lstrip(os.sep))
    return venv / rel


def ensure(pins_list: list[str], log=print) -> Path:
    """Python executable of the environment with these pins, building it if needed."""
    pins = _exact_pins(pins_list)
    venv = cache_root() / "envs" / env_key(pins)
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        # Several processes on one machine may ask for the same environment at once (Ray tasks of one
        # environment on one node): one builds it, the others wait and reuse it.
        with _build_lock(venv):
            if not (venv / ".ready").exists():
                try:
                    _build(venv, python, pins, log)
                except BaseException:  # a failed or interrupted build leaves nothing in the cache
                    shutil.rmtree(venv, ignore_errors=True)
                    raise
    else:
        os.utime(venv / ".ready")  # last used, for `benchsuite cache prune --older-than`
    site = _site_packages(venv)
    site.mkdir(parents=True, exist_ok=True)
    (site / "benchsuite_overlay.pth").write_text(str(overlay()) + "\n")
    return python


def build_lock_path(venv: Path) -> Path:
    """The build lock of an environment: ``$BENCHSUITE_CACHE/locks/<key>.lock``, outside ``envs/`` so that a
    failed build leaves nothing there."""
    return venv.parent.parent / "locks" / (venv.name + ".lock")


class _build_lock:
    """An exclusive lock on the environment's build lock file (released when the holder exits, even when
    it is killed)."""

    def __init__(self, venv: Path):
        self.path = build_lock_path(venv)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _build(venv: Path, python: Path, pins: dict[str, str], log) -> None:
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
    as_of = resolution_date(pins)
    limits = contemporary_limits(pins, as_of)
    for package, limit in limits.items():
        cmd += ["--exclude-newer-package", f"{package}={limit}"]
    _run(cmd, f"install {' '.join(reqs[1:])}" + (f" (companions as of {next(iter(limits.values()))})"
                                                     if limits else ""))
    (venv / RESOLUTION_FILE).write_text(json.dumps({
        "resolved_as_of": as_of.strftime("%Y-%m-%dT%H:%M:%SZ") if as_of else None,
        "rule": "unpinned companions uploaded no later than the newest pinned release",
        "pins": pins, "companions": sorted(limits)}, indent=1) + "\n")
    (venv / ".ready").write_text("\n".join(reqs) + "\n")


def uv_cache_dir() -> Path:
    """uv's cache: $UV_CACHE_DIR where the user set it, else $BENCHSUITE_CACHE/uv (beside the environments it
    hard-links its files into, so that `benchsuite cache` lists it and the whole cache is one folder)."""
    return Path(os.environ.get("UV_CACHE_DIR") or cache_root() / "uv")


def _run(cmd: list[str], what: str) -> None:
    """A uv command, with uv's cache where uv_cache_dir() says."""
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache_dir())}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise EnvError(f"could not {what}: {tail}")
