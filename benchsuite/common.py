"""The ground floor: helpers every layer may use (bad input, the version, atomic writes, the cache root).

This module imports nothing else from benchsuite, so anything can import it without a cycle."""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import tempfile
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _v
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def case_module_name(path: str | os.PathLike) -> str:
    """The module name a case file is imported under (its id with - as _)."""
    return f"benchsuite_case_{Path(path).stem.replace('-', '_')}"


def import_case_file(path: str | os.PathLike):
    """Import a case file as the module ``case_module_name(path)`` (registered in sys.modules)."""
    name = case_module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def envelope(kind: str, fields: dict) -> dict:
    """Every JSON result benchsuite writes: {"benchsuite_version", "kind", ...fields}."""
    return {"benchsuite_version": version(), "kind": kind, **fields}


def cache_root() -> Path:
    """Where benchsuite keeps what it caches: $BENCHSUITE_CACHE, default ~/.cache/benchsuite."""
    return Path(os.environ.get("BENCHSUITE_CACHE", Path.home() / ".cache" / "benchsuite"))


class UsageError(Exception):
    """Bad input from the command line: one line on stderr, exit code 2, nothing run."""


def version() -> str:
    try:
        return _v("benchsuite")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def check_output(path: str | os.PathLike | None, option: str) -> None:
    """Fail fast (UsageError) when a report could not be written there; creates a missing parent folder.

    Called before any long work so that a typo in a path is found in a second, not after the run.
    "-" (stdout) is always fine.
    """
    if path is None or str(path) == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    parent = p.parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: folder {existing} is not writable")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create folder {parent}: {exc.strerror or exc}") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{option} {path}: file is not writable")


def check_outputs(outputs: dict[str, str | os.PathLike | None]) -> bool:
    """check_output for every report a command was asked for ({option: path}); at most one may go to stdout
    ("-"). Returns whether one does (then the console table goes to stderr)."""
    for option, path in outputs.items():
        check_output(path, option)
    to_stdout = sum(str(p) == "-" for p in outputs.values() if p)
    if to_stdout > 1:
        raise UsageError("only one report can go to stdout (-)")
    return bool(to_stdout)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write through a uniquely named temporary file in the same folder, then rename it into place:
    readers never see half a file, and two processes writing the same report never collide (the last
    rename wins). "-" writes to stdout."""
    if str(path) == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would have made it
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; no-op elsewhere).

    A case runs in its own process group (so a timeout can kill it with its scenario processes); that
    also puts it out of reach of a kill aimed at the runner's group. Without this, interrupting a run
    would leave a hung case sleeping for ever.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
