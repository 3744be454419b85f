"""A case file's declared range, rewritten in place: what ``bisect --write`` and ``refresh --write`` do when
the probes contradict it (the case's ``affected=`` for one package, with a comment saying why)."""
from __future__ import annotations

import ast
import difflib
import json
from pathlib import Path


def rewrite_affected(source: str, affected: dict[str, str], package: str, spec: str, comment: str) -> str:
    """The case file's source with ``affected=`` giving ``package`` the specifier ``spec`` (other packages
    kept). The dict literal of the Case(...) call is replaced in place, a comment after it on the same line
    replaced by ``comment``; without an ``affected=`` argument one is added after ``references=``."""

    tree = ast.parse(source)
    call = next((n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", getattr(n.func, "attr", None)) == "Case"), None)
    if call is None:
        raise ValueError("no Case(...) call in the file")
    new = {**affected, package: spec}
    literal = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in new.items()) + "}"
    lines = source.splitlines(keepends=True)
    kw = next((k for k in call.keywords if k.arg == "affected"), None)
    if kw is not None:
        v = kw.value
        assert v.end_lineno is not None and v.end_col_offset is not None  # set by ast.parse
        start = sum(len(x) for x in lines[:v.lineno - 1]) + v.col_offset
        end = sum(len(x) for x in lines[:v.end_lineno - 1]) + v.end_col_offset
        rest_end = source.find("\n", end)
        rest_end = len(source) if rest_end < 0 else rest_end
        rest = source[end:rest_end]
        tail = rest.split("#", 1)[0].rstrip() + f"  # {comment}" if "#" in rest else rest
        return source[:start] + literal + tail + source[rest_end:]
    ref = next((k for k in call.keywords if k.arg == "references"), None)
    if ref is None:
        raise ValueError("the Case(...) call has neither affected= nor references=")
    indent = " " * ref.col_offset
    at = sum(len(x) for x in lines[:ref.value.end_lineno])  # after the line where references= ends
    return source[:at] + f"{indent}affected={literal},  # {comment}\n" + source[at:]


def write_range(path: Path, affected: dict[str, str], package: str, fix: str | None, result: dict, say) -> bool:
    """``bisect --write``: put the suggested range into the case file and print the diff (never silent).
    Nothing is written when the probes agree with the declaration or no range can be suggested."""

    if fix is None:
        say(f"--write: {path.name} left as it is (no corrected range: see the lines above)")
        return False
    if result.get("found"):
        comment = (f"bisected: {result['last_status']} at {package} {result['last']}, {result['first_status']} "
                   f"from {result['first']} (benchsuite bisect --write)")
    else:
        comment = f"bisected: {result.get('why')} (benchsuite bisect --write)"
    before = path.read_text()
    after = rewrite_affected(before, affected, package, fix, comment)
    if after == before:
        say(f"--write: {path.name} already says {package}{fix}")
        return False
    compile(after, str(path), "exec")  # never leave a case file that does not parse
    path.write_text(after)
    say(f"--write: updated {path} ({package}: {affected.get(package, 'every version')!r} -> {fix!r}); review it:")
    say("".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                     f"a/{path.name}", f"b/{path.name}")).rstrip("\n"))
    return True
