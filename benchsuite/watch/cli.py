"""`benchsuite watch [options] -- COMMAND ...`: run a training command with the gradient watcher attached."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .agent import ENV_DIR, ENV_EVERY, ENV_LOG, ENV_POLICY, PREFIX, _WHAT

SITE_DIR = Path(__file__).parent / "_site"


def _summaries(folder: Path) -> list[dict]:
    out = []
    for f in sorted(folder.glob("rank*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    return sorted(out, key=lambda s: (s["rank"], s["pid"]))


def render(summaries: list[dict], code: int, wall: float) -> str:
    lines = [f"{PREFIX} summary: exit code {code}, {wall:.1f} s, {len(summaries)} training process(es) watched"]
    if not summaries:
        lines.append("  no optimizer step was seen (is the command a Python training script run with this Python?)")
    for s in summaries:
        ms = f"{s['scan_ms_per_step']:.2f} ms/scan" if s["scan_ms_per_step"] is not None else "-"
        frac = f", {100 * s['overhead_fraction']:.2f}% of the time between first and last scan" \
            if s.get("overhead_fraction") is not None else ""
        lines.append(f"  rank {s['rank']} (pid {s['pid']}): {s['scans']} scan(s), scanner {ms}{frac}")
        if not s["problems"]:
            lines.append("    healthy: no problem found")
        for p in s["problems"]:
            names = p["names"]
            shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
            lines.append(f"    {_WHAT.get(p['kind'], p['kind'])} from step {p['first_step']}: {len(names)} "
                         f"parameter(s): {shown}")
    return "\n".join(lines)


def main(args) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("benchsuite watch: give the command after --, e.g. benchsuite watch -- python train.py", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="benchsuite-watch-") as tmp:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SITE_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env[ENV_DIR] = tmp
        env[ENV_POLICY] = args.policy
        env[ENV_EVERY] = str(args.every)
        if args.log:
            env[ENV_LOG] = str(Path(args.log).resolve())
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(command, env=env)
        except OSError as exc:
            print(f"benchsuite watch: cannot start {command[0]!r}: {exc}", file=sys.stderr)
            return 127
        previous = signal.signal(signal.SIGINT, lambda *_: proc.send_signal(signal.SIGINT))
        try:
            code = proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
        wall = time.perf_counter() - t0
        summaries = _summaries(Path(tmp))
    print(render(summaries, code, wall), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "exit_code": code, "wall_seconds": wall,
                                               "policy": args.policy, "every": args.every,
                                               "processes": summaries}, indent=2))
    return code
