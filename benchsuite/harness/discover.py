"""Finding case files and loading one (file name = case id)."""
from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path


def default_cases_dir() -> Path:
    """cases/ of the installed wheel (benchsuite/cases) or of a source checkout (editable install)."""
    pkg = Path(__file__).resolve().parent.parent
    for candidate in (pkg / "cases", pkg.parent / "cases"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("benchsuite's case catalogue was not found next to the package; pass --cases-dir")


def case_files(cases_dir: Path) -> dict[str, Path]:
    """{case id: file} for every *.py in the folder that is not private (leading underscore)."""
    return {p.stem: p for p in sorted(Path(cases_dir).glob("*.py")) if not p.name.startswith("_")}


def resolve(ids: list[str], cases_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files for the ids asked for (all when none), and (id, message) for the unknown ones."""
    files = case_files(cases_dir)
    if not ids:
        return list(files.values()), []
    found, unknown = [], []
    for i in ids:
        if i in files:
            found.append(files[i])
        else:
            near = difflib.get_close_matches(i, list(files), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; `benchsuite list` shows the catalogue"
            unknown.append((i, f"unknown case id {i!r} in {cases_dir}{hint}"))
    return found, unknown


def load_case(path: Path):
    """Import a case file and return its ``case`` object (a benchsuite.case.Case)."""
    from ..case import Case
    name = f"benchsuite_case_{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    case = getattr(module, "case", None)
    if not isinstance(case, Case):
        raise TypeError(f"{path.name} defines no `case = Case(...)` object")
    if case.id != path.stem:
        raise ValueError(f"{path.name}: case id {case.id!r} differs from the file name {path.stem!r}")
    if case.trigger_fn is None:
        raise ValueError(f"{path.name}: no trigger registered (decorate a function with @case.trigger)")
    return case
