"""Options several commands share, declared once with one help text, and their value checks."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..common import UsageError
from ..harness.discover import case_files, default_cases_dir, load_case, select

JSON_HELP = "write the result as JSON to PATH (- for stdout); every JSON carries benchsuite_version"


def _whole_number(minimum: int, words: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be {words}, not {v}")
        return v
    return parse


positive_int = _whole_number(1, "at least 1")
nonneg_int = _whole_number(0, "0 or more")


def _positive_number(what: str, allow_zero: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
        if not (v >= 0 if allow_zero else v > 0):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if allow_zero else 'positive'}, not {text}")
        return v
    return parse


seconds = _positive_number("seconds")
days = _positive_number("days", allow_zero=True)


def cases_dir(p) -> None:
    p.add_argument("--cases-dir", default=None, metavar="DIR", help="a folder of case files (default: the catalogue)")


def selection(p, tags: bool = True) -> None:
    p.add_argument("-k", dest="keyword", default=None, metavar="TEXT",
                   help="only cases whose id contains TEXT ('not TEXT' for the others)")
    if tags:
        p.add_argument("--tag", action="append", default=[], metavar="TAG",
                       help="only cases with this tag or family (repeatable: every one must be present); "
                            "`list` shows tags and families")


def json_output(p, optional_path: bool = False, help: str = JSON_HELP) -> None:
    """--json PATH; with ``optional_path`` a bare --json writes to stdout."""
    if optional_path:
        p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH", help=help)
    else:
        p.add_argument("--json", default=None, metavar="PATH", help=help)


def markdown_output(p, help: str = "the table as Markdown (- for stdout)") -> None:
    p.add_argument("--markdown", default=None, metavar="PATH", help=help)


def junit_output(p, help: str = "JUnit XML for CI (- for stdout)") -> None:
    p.add_argument("--junit", default=None, metavar="PATH", help=help)


def timeout(p, default: float = 300.0, per: str = "case") -> None:
    p.add_argument("--timeout", type=seconds, default=default, metavar="S",
                   help=f"per {per}, in seconds (default {default:.0f})")


def jobs(p, default: int | None = 2, note: str = "") -> None:
    p.add_argument("--jobs", type=positive_int, default=default, metavar="N",
                   help=f"cases at a time (default 2{note})")


def repeat(p) -> None:
    p.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="run every case N times, each scenario in fresh processes; verdicts that differ between "
                        "runs make the case 'flaky' (--timeout is per run)")


def pins(p, help: str) -> None:
    """--with REQ: one requirement per package, repeatable (a matrix takes lists: see commands/matrix.py)."""
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="REQ", help=help)


def model(p, help: str = "a local checkpoint folder, for the cases that support it and its model family") -> None:
    p.add_argument("--model", default=None, metavar="PATH", help=help)


def ray(p) -> None:
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="local|ADDRESS",
                   help="run each environment's cases as Ray tasks: `local` (the default) starts a cluster on this "
                        "machine for the run; ADDRESS is an existing cluster (auto, HOST:PORT, ray://HOST:10001). "
                        "Needs pip install 'benchsuite[ray]'")
    p.add_argument("--ray-workers", type=positive_int, default=None, metavar="N",
                   help="with --ray: tasks at a time (default: the cluster's CPUs; a local cluster gets N CPUs)")


def resolve_cases_dir(value: str | None) -> Path:
    """The --cases-dir folder (checked) or the catalogue."""
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
    cases, broken = [], []
    for path in select(list(case_files(folder).values()), keyword, tags):
        try:
            cases.append((load_case(path), path))
        except Exception as exc:
            broken.append((path.stem, f"{type(exc).__name__}: {exc}"))
    return cases, broken
