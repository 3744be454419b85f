"""Helpers the tests share for checking that nothing is left running."""
from __future__ import annotations

from pathlib import Path


def processes_with(text: str) -> list[int]:
    """PIDs of the processes whose command line contains ``text``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found
