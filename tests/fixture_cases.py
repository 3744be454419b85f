"""The harness's own fixture cases (tests/fixtures/cases/, one file per case, not part of the catalogue):
cases that raise, hang, kill their process, need a GPU, and so on. A test copies the ones it needs into a
folder of its own and runs it with --cases-dir."""
from __future__ import annotations

import shutil
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "fixtures" / "cases"
DOCTOR = ("doc-applies", "doc-missing-requirement", "doc-chatglm-only", "doc-old-release")
TORCHRUN = ("rank-raises", "rank-hangs")


def write_cases(folder: Path, names) -> Path:
    """Copy the fixture cases ``names`` into ``folder`` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(FOLDER / f"{name}.py", folder / f"{name}.py")
    return folder
