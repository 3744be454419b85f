"""doctor's answer to a symptom (``--error``/``--log``): the ranked matches as text and Markdown."""
from __future__ import annotations

SHOWN = 5  # matches printed unless --all; the JSON has every one


def _specs(specs: dict) -> str:
    return ", ".join(f"{k}{v}" for k, v in specs.items()) or "every version"


def _fixes(m: dict) -> str:
    return "; ".join(("+ " if f["declared_works"] else "- (circulates, does not work) ") + f["title"]
                     for f in m["fixes"]) or "none declared"


def render(doc: dict, show_all: bool = False) -> str:
    sym = doc["symptom"]
    lines = []
    if sym.get("log"):
        log = sym["log"]
        lines.append(f"read {log['path']} ({log['kind']}, {log['records']} log record(s))")
        if log["signs"]:
            lines += [f"  sign {name}: {evidence}" for name, evidence in log["signs"].items()]
        else:
            lines.append("  no sign of a known failure in it (loss, grad_norm, learning rate and evaluation "
                         "records look ordinary)")
    matches = doc["matches"]
    what = "this log" if sym.get("log") else "this error"
    if not matches:
        lines.append(f"no case of the catalogue ({doc['cases_dir']}) explains {what}. `benchsuite doctor` lists "
                     f"the failures that apply to your versions; docs/my-run-went-wrong.md walks through the "
                     f"other ways in.")
        return "\n".join(lines)
    lines.append(f"{len(matches)} case(s) may explain {what}, best first:")
    for i, m in enumerate(matches if show_all else matches[:SHOWN], 1):
        where = "applies here" if m["applies"] else f"does not apply here: {m['applies_reason']}"
        lines.append("")
        lines.append(f"{i}. {m['id']}  [{m['family'] or 'no family'}; {where}]")
        lines.append(f"   {m['title']}")
        lines.append(f"   why: {'; '.join(m['why'])}")
        lines.append(f"   affected: {_specs(m['affected'])}" + (f"; fixed in {m['fixed_in']}" if m["fixed_in"] else "")
                     + f"; refs: {', '.join(m['references'])}")
        lines.append(f"   fixes: {_fixes(m)}")
        lines.append(f"   reproduce: benchsuite run {m['id']}")
    if not show_all and len(matches) > SHOWN:
        lines.append("")
        lines.append(f"... {len(matches) - SHOWN} weaker match(es) not shown (--all shows them, --json lists them)")
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    out = ["# benchsuite doctor: what explains this symptom", "",
           "| rank | case | why | applies here | fixes |", "|---|---|---|---|---|"]
    for i, m in enumerate(doc["matches"], 1):
        out.append(f"| {i} | `{m['id']}` | {'; '.join(m['why']).replace('|', '/')} | "
                   f"{'yes' if m['applies'] else 'no: ' + str(m['applies_reason']).replace('|', '/')} | "
                   f"{_fixes(m).replace('|', '/')} |")
    return "\n".join(out) + "\n"
