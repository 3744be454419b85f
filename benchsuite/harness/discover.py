"""Finding case files and loading one (file name = case id)."""
from __future__ import annotations

import ast
import difflib
import json
from pathlib import Path

from ..case import Case
from ..common import import_case_file
from .report import UsageError


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
    module = import_case_file(path)
    case = getattr(module, "case", None)
    if not isinstance(case, Case):
        raise TypeError(f"{path.name} defines no `case = Case(...)` object")
    if case.id != path.stem:
        raise ValueError(f"{path.name}: case id {case.id!r} differs from the file name {path.stem!r}")
    if case.trigger_fn is None:
        raise ValueError(f"{path.name}: no trigger registered (decorate a function with @case.trigger)")
    return case


def model_family(path: str | Path) -> str | None:
    """The ``model_type`` in a checkpoint folder's config.json (llama, qwen2, chatglm, ...), or None."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def check_model_path(path: str, option: str = "--model") -> str:
    """A local checkpoint folder (with config.json), resolved; UsageError otherwise. Nothing is downloaded."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{option} {path}: no such folder (a local checkpoint folder with config.json; "
                         "nothing is downloaded)")
    if not p.is_dir() or not (p / "config.json").is_file():
        raise UsageError(f"{option} {path}: not a checkpoint folder (no config.json in it)")
    return str(p.resolve())


def select(paths: list[Path], keyword: str | None = None, tags: list[str] | None = None) -> list[Path]:
    """Cases whose id contains ``keyword`` (or, with "not " first, does not) and that carry every tag.

    Tags are read from the case files' text without importing them (a broken file is kept, so that the
    run reports it rather than hiding it)."""
    out = []
    for p in paths:
        if keyword:
            neg = keyword.startswith("not ")
            word = keyword[4:].strip() if neg else keyword
            if (word.lower() in p.stem.lower()) == neg:
                continue
        if tags:
            have = case_tags(p)
            if have is not None and not all(t in have for t in tags):
                continue
        out.append(p)
    return out


def case_tags(path: Path) -> list[str] | None:
    """The ``tags=[...]`` a case file declares, and its ``family=`` (selectable like a tag), read without
    importing it; None when unreadable."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Case":
            found: list[str] = []
            for kw in node.keywords:
                if kw.arg in ("tags", "family"):
                    try:
                        value = ast.literal_eval(kw.value)
                    except ValueError:
                        return None
                    found += [value] if isinstance(value, str) else list(value)
            return found
    return None
