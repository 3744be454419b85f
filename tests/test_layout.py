"""The package's shape holds (issue 30): layers point one way (no import cycle, counting imports inside
functions), no source file over 400 lines, no function over 80, and the command line only assembles."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "benchsuite"
VENDORED = {"remote"}  # the remote-code model is a copy of a model's own file, kept as it is
MAX_FILE, MAX_FUNCTION = 400, 80


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        if VENDORED & set(p.relative_to(PACKAGE).parts):
            continue
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The benchsuite modules ``name`` imports anywhere in its file (function bodies included)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        for t in targets:
            while t and t not in known and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in known and t != name:
                found.add(t)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_counting_imports_inside_functions():
    modules = _modules()
    graph = {m: _imports(m, p, set(modules)) for m, p in modules.items()}
    assert _cycles(graph) == []


def test_the_scanner_imports_nothing_above_it():
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("benchsuite.gradscan"):
            ground = ("benchsuite", "benchsuite.common", "benchsuite.notices", "benchsuite.info", "benchsuite._core")
            above = {m for m in _imports(name, path, set(modules))
                     if not m.startswith("benchsuite.gradscan") and m not in ground}
            assert not above, f"{name} imports {sorted(above)}"


def test_no_file_over_400_lines_and_no_function_over_80():
    long_files, long_functions = [], []
    for path in _modules().values():
        text = path.read_text()
        if text.count("\n") > MAX_FILE:
            long_files.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {n} lines")
    assert long_files == [] and long_functions == []


def test_cli_only_assembles_the_commands():
    cli = PACKAGE / "cli.py"
    assert cli.read_text().count("\n") < 100
    commands = sorted(p.stem for p in (PACKAGE / "commands").glob("*.py") if not p.stem.startswith("_"))
    for name in commands:
        tree = ast.parse((PACKAGE / "commands" / f"{name}.py").read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"register", "run"} <= defined, f"commands/{name}.py needs register(sub) and run(args)"


def test_the_cli_starts_without_the_heavy_packages():
    """The CLI builds its parser without importing torch, transformers, peft, trl or ray: a usage error, --help,
    list and doctor --error answer without them, and `watch`'s own process leaves them to the watched script.
    Modules that need them import them where they are used."""
    code = ("import sys, benchsuite.cli; print(' '.join(m for m in ('torch', 'transformers', 'peft', 'trl', 'ray', "
            "'matplotlib') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at the CLI's start-up: {proc.stdout.strip()}"
