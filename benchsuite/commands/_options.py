"""Options shared by several commands, declared once with one help text."""
from __future__ import annotations

from pathlib import Path

from ..harness.report import UsageError


def cases_dir(p) -> None:
    p.add_argument("--cases-dir", default=None, metavar="DIR", help="a folder of case files (default: the catalogue)")


def selection(p) -> None:
    p.add_argument("-k", dest="keyword", default=None, metavar="TEXT",
                   help="only cases whose id contains TEXT ('not TEXT' for the others)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="only cases with this tag or family (repeatable: every one must be present)")


def resolve_cases_dir(value: str | None) -> Path:
    """The --cases-dir folder (checked) or the catalogue."""
    from ..harness.discover import default_cases_dir
    if value:
        p = Path(value)
        if not p.is_dir():
            raise UsageError(f"--cases-dir {value}: no such folder")
        return p
    try:
        return default_cases_dir()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


def load_selected(folder: Path, keyword: str | None = None, tags: list[str] | None = None):
    """([(case, path)], [(id, error)]) for the selected case files of ``folder``; broken files are reported,
    never fatal."""
    from ..harness.discover import case_files, load_case, select
    cases, broken = [], []
    for path in select(list(case_files(folder).values()), keyword, tags):
        try:
            cases.append((load_case(path), path))
        except Exception as exc:
            broken.append((path.stem, f"{type(exc).__name__}: {exc}"))
    return cases, broken
