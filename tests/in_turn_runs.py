"""Helpers the watch tests share for a process that runs several variants' scripts in turn
(tests/watch_scripts/in_turn.py): its command line, and one variant's model picked out of watch's summary."""
from __future__ import annotations

from pathlib import Path

IN_TURN = str(Path(__file__).resolve().parent / "watch_scripts" / "in_turn.py")


def in_turn(commands: dict) -> list[str]:
    """The script arguments of one process that runs the variants in turn: {name: script and args}; each
    variant's `{tmp}` becomes a folder of its own, `{tmp}/name`."""
    args = [IN_TURN]
    for k, (name, command) in enumerate(commands.items()):
        args += [";;"] * bool(k) + [a.replace("{tmp}", "{tmp}/" + name) for a in command]
    return args


def variant_of(proc, summary: dict, names: list[str], name: str, finished: bool = True):
    """The variant `name` of a process that ran the scripts of `names` in turn: (its model, its open findings,
    watch's summary lines about that model). Each script trains one model, so the k-th model is the k-th
    script's. `finished`: whether its script must have run to its end (False: it must not have)."""
    k = names.index(name)
    done = proc.stdout.count("in_turn: finished ")
    assert (f"in_turn: finished {k + 1}/{len(names)} " in proc.stdout) == finished, proc.stderr[-3000:]
    p = summary["processes"][0]
    models = p["models"]
    assert len(models) in (done, done + 1) and len(models) > k, [m["label"] for m in models]  # one per script
    m = models[k]
    lines = proc.stderr.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith(f"      model {m['order']}: {m['label']} ("))
    block = []
    for ln in lines[head + 1:]:
        if not ln.startswith(" " * 8):
            break
        block.append(ln)
    found = {f["kind"]: f for f in p["findings"] if f["status"] == "open" and f["model"] == m["label"]}
    return m, found, "\n".join(block)
