"""`benchsuite watch [options] -- COMMAND ...`: run a training command with the gradient watcher attached.

The command's output, files and exit status are its own: watch exits with the script's code, and with
128+N when the script was ended by signal N, as a shell reports it; under --policy raise, with STOPPED_EXIT (4,
watch/stop.py) when watch stopped the run, and FINDINGS_AT_END_EXIT (3) when a finding came too late to stop it.
Output paths are checked before the script starts; a failure to write them at the end is a warning, never a
different exit code.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

from .. import __version__, strictjson
from ..catalogue import watch_known_cases, watch_lines
from .cases import annotate
from .env import (
    ENV_COMMAND,
    ENV_CONFIRM,
    ENV_DIR,
    ENV_EVERY,
    ENV_JSON,
    ENV_LOG,
    ENV_POLICY,
    ENV_REPLICA_EVERY,
    ENV_RL,
    ENV_SIGNATURE,
    ENV_SIGNATURE_STEP,
    ENV_TRACEBACK,
    PREFIX,
)
from .kinds import RUN_LEVEL
from .names import compact
from .stop import STOPPED_EXIT, stop_lines, stopped_processes

SITE_DIR = Path(__file__).parent / "_site"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", choices=["warn", "raise", "record"], default="warn",
                   help="warn: one line per confirmed finding; raise: stop the script at the first confirmed "
                        "finding; record: log only")
    p.add_argument("--every", type=int, default=1, metavar="N", help="scan every N-th optimizer step (default 1)")
    p.add_argument("--confirm", type=int, default=3, metavar="N",
                   help="scans of evidence before a finding that could still clear is confirmed (default 3)")
    p.add_argument("--replica-every", type=int, default=10, metavar="K",
                   help="under torch.distributed, compare the ranks' weights at the 2nd and every K-th scan "
                        "(default 10)")
    p.add_argument("--rl", action="store_true",
                   help="the script is an RL loop where a batch may carry no signal (zero advantage): a step whose "
                        "gradient is zero everywhere is counted, not judged (GRPO/RLOO/PPO-style Trainers are "
                        "recognised without it)")
    p.add_argument("--traceback", action="store_true",
                   help=f"with --policy raise: when watch stops the script, also print the script's own traceback "
                        f"(its frames down to the stopped call, e.g. opt.step()); without it only benchsuite's "
                        f"message is printed, and watch exits with {STOPPED_EXIT}")
    p.add_argument("--log", default=None, metavar="PATH", help="per-step JSONL (one file per rank)")
    p.add_argument("--json", default=None, metavar="PATH", help="the final summary as JSON ('-' for stdout)")
    p.add_argument("--signature", default=None, metavar="PATH",
                   help="write every trainable parameter's gradient signature at the run's first optimizer step "
                        "(after unscaling, clipping and accumulation, before the update) to PATH as JSON, one file "
                        "per rank and per model (PATH.model2.json: a sweep's second); compare two runs with "
                        "`benchsuite compare-grads A.json B.json`")
    p.add_argument("--signature-step", type=int, default=1, metavar="N",
                   help="with --signature: take it at the N-th optimizer step instead (default 1)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the training command, after --, e.g. -- python train.py --lr 2e-5 or -- torchrun ...")


def _usage(msg: str) -> int:
    print(f"benchsuite watch: {msg}", file=sys.stderr)
    return 2


def _writable(path: str, what: str) -> str | None:
    """Create the parent folder and check the file can be written; an error message otherwise."""
    p = Path(path).expanduser()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the folder for {what} {path}: {exc.strerror or exc}"
    if p.is_dir():
        return f"{what} {path} is a folder, not a file"
    if p.exists() and not os.access(p, os.W_OK):
        return f"{what} {path} is not writable"
    if not os.access(p.parent, os.W_OK | os.X_OK):
        return f"{what} {path}: the folder {p.parent} is not writable"
    return None


def _summaries(folder: Path) -> list[dict]:
    out = []
    for f in sorted(folder.glob("proc-*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    return sorted(out, key=lambda s: (s.get("rank", 0), s.get("pid", 0)))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else ("es" if word.endswith("s") else "s"))


def verdict(procs: list[dict]) -> str:
    stepping = [s for s in procs if s.get("optimizer_steps")]
    if not procs:
        return "not-attached"
    if not stepping:
        return "no-optimizer-step"
    if any(f["status"] == "open" for s in stepping for f in s["findings"]):
        return "findings"
    return "healthy"


def render(procs: list[dict], code: int, wall: float) -> str:
    stepping = [s for s in procs if s.get("optimizer_steps")]
    stopped = stopped_processes(procs)
    how = f"watch stopped the run at {stopped[0]['stopped']['where']} (--policy raise)" if stopped and code \
        else f"the script exited {code}"
    lines = [f"{PREFIX} summary: {how} after {wall:.1f} s; {_plural(len(procs), 'Python process')} "
             f"attached, {len(stepping)} ran optimizer steps"]
    if not procs:
        lines.append("  nothing was watched: no Python process of the command loaded the watcher (it loads through "
                     "PYTHONPATH into a Python that can import benchsuite; python -I/-E and other interpreters are "
                     "not watched)")
    elif not stepping:
        errors = [s["error"] for s in procs if s.get("error")]
        if code == 0:
            lines.append("  nothing was scanned: the script finished without running an optimizer step")
        else:
            lines.append(f"  nothing was scanned: the script exited with code {code} before its first optimizer step")
        if errors:
            lines.append(f"  its last error: {errors[-1]}")
    for s in stepping:
        lines.extend(_render_process(s))
    # -- known cases (benchsuite/catalogue.py): catalogue cases whose explains= covers an open finding
    lines.extend(watch_lines(stepping))
    return "\n".join(lines)


def _render_process(s: dict) -> list[str]:
    ov = s.get("overhead") or {}
    params = s.get("params") or {}
    models = [m for m in s.get("models") or [] if m.get("scans")]
    steps = f"steps {s['first_step']}-{s['last_step']}" if s.get("last_step") not in (None, s.get("first_step")) \
        else f"step {s.get('first_step')}"
    if len(models) > 1:  # each model numbers its own steps (a Trainer starts at 1): their ranges are listed below
        steps = f"{len(models)} models"
    head = (f"  rank {s['rank']} (pid {s['pid']}): {_plural(s['optimizer_steps'], 'optimizer step')} ({steps}), "
            f"{s['scans']} scanned")
    if params and len(models) <= 1:
        missing = params["trainable"] - params["in_optimizers"]
        head += (f"; {_plural(params['trainable'], 'trainable parameter')}, "
                 + ("all in an optimizer" if not missing else f"{missing} in no optimizer"))
    out = [head]
    if ov.get("median_scan_ms") is not None:
        cost = f"    scanner: {ov['median_scan_ms']:.2f} ms/scan (median of {ov['scans_timed']}, first scan " \
               f"{ov['first_scan_ms']:.1f} ms not counted)"
        if ov.get("fraction_of_step") is not None:
            cost += f", {100 * ov['fraction_of_step']:.2f}% of the median step ({ov['median_step_ms']:.1f} ms)"
        out.append(cost)
    elif ov.get("first_scan_ms") is not None:
        out.append(f"    scanner: one scan, {ov['first_scan_ms']:.1f} ms (includes one-time set-up)")
    if len(models) > 1:
        out.append(f"    {len(models)} models trained in this process, each judged alone:")
        for m in models:
            out.extend(_render_model(m, [f for f in s["findings"] if f.get("model") == m["label"]], "        ", True))
    else:
        out.extend(_render_model(models[0] if models else {"scans": s["scans"], "params": params,
                                                           "zero_gradient_steps": s.get("zero_gradient_steps")},
                                 s["findings"], "    ", False))
    sigs = s.get("signatures") or ([s["signature"]] if s.get("signature") else [])
    for sig in sigs:
        about = f", {sig['model']}" if len(sigs) > 1 and sig.get("model") else ""
        if sig.get("error"):
            out.append(f"    no gradient signatures{about}: {sig['error']}")
        else:
            none = f", {sig['none']} without a gradient" if sig.get("none") else ""
            out.append(f"    gradient signatures of step {sig['step']}{about} "
                       f"({_plural(sig['parameters'], 'parameter')}{none}): {sig['path']}")
    for note in s.get("notes") or []:
        if not (any(sig.get("error") for sig in sigs) and note.startswith("gradient signatures not written")):
            out.append(f"    note: {note}")
    return out


def _render_model(m: dict, findings: list[dict], pad: str, several: bool) -> list[str]:
    params = m.get("params") or {}
    out = []
    if several:
        steps = f"steps {m.get('first_step')}-{m.get('last_step')}"
        lr = (m.get("learning_rate") or {}).get("peak")
        scanned = _plural(params.get("scanned", 0), "parameter")
        out.append(f"{pad[:-2]}model {m['order']}: {m['label']} ({steps}, {scanned}"
                   + (f", peak learning rate {lr:.3g}" if lr else "") + ")")
    open_findings = [f for f in findings if f["status"] == "open"]
    if not open_findings:
        out.append(f"{pad}healthy: no finding in {_plural(m['scans'], 'scan')} of "
                   f"{_plural(params.get('scanned', 0), 'parameter')}")
    for f in findings:
        when = f"confirmed at step {f['confirmed_at']}" if f["confirmed_at"] != "end" else \
            ("at the end of its training" if several else "at the end of the run")
        if f.get("since_step") is not None:
            when += f", evidence from step {f['since_step']}"
        if f["status"] == "cleared":
            when = f"cleared at step {f['cleared_at']} ({when})"
        what = f.get("evidence") if f["kind"] in RUN_LEVEL and f.get("evidence") else \
            f"{_plural(f['count'], 'parameter')}: {compact(f['names'], 2)}"
        out.append(f"{pad}{f['title']} ({when}): {what}")
        if f["status"] == "open":
            out.append(f"{pad}  likely cause: {f['cause']}")
            if f.get("cases"):
                out.append(f"{pad}  catalogue cases that explain it, best first: {', '.join(f['cases'])}")
    nj = m.get("not_judged")
    if nj:
        at = f"step {nj['step']}" if nj["step"] != "end" else "the end of its training"
        out.append(f"{pad}not judged at the end (weights that never changed, the loss and learning rate over the run, "
                   f"what was never seen): the run was stopped at {at}")
        if nj.get("in_no_optimizer"):
            out.append(f"{pad}  at the stop, {_plural(len(nj['in_no_optimizer']), 'trainable parameter')} in no "
                       f"optimizer param group yet: {compact(nj['in_no_optimizer'], 2)}")
    zero_steps = m.get("zero_gradient_steps") or []
    if zero_steps and not any(f["kind"] in ("zero-everywhere", "rl-few-signal") and f["status"] == "open"
                              for f in findings):
        out.append(f"{pad}{_plural(len(zero_steps), 'step')} with a gradient of exactly zero everywhere (e.g. zero "
                   f"advantage): not a finding on its own")
    return out


# --policy raise: the script exited 0, but a finding was confirmed at its end (too late to stop it), so a CI
# gate built on raise still fails. The script's own non-zero exit code always wins.
FINDINGS_AT_END_EXIT = 3


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _watch_code(policy: str, procs: list[dict], code: int) -> int:
    """watch's exit code: the script's, unless --policy raise stopped the run or found a problem too late."""
    if policy == "raise" and code == 0 and verdict(procs) == "findings":
        return FINDINGS_AT_END_EXIT
    if code and stopped_processes(procs):
        return STOPPED_EXIT  # the stop ended a process (a rank, then its launcher): not a crash of the script
    return code


def _closing_line(procs: list[dict], code: int, script_code: int) -> str:
    if code == STOPPED_EXIT:
        return "\n".join(stop_lines(procs, script_code))
    caught = [s["stopped"] for s in procs if s.get("stopped")]
    if caught:
        return (f"{PREFIX} exit code {FINDINGS_AT_END_EXIT}: the script caught watch's stop at {caught[0]['where']} "
                f"(--policy raise) and exited 0; the finding stands")
    return (f"{PREFIX} exit code {FINDINGS_AT_END_EXIT}: the script exited 0, but findings were confirmed at its "
            f"end (--policy raise could not stop it earlier)")


@dataclass
class WatchOptions:
    """What `benchsuite watch` runs and how: the command line's options, as the engine takes them."""
    command: list[str]
    policy: str = "warn"
    every: int = 1
    confirm: int = 3
    replica_every: int = 10
    rl: bool = False
    traceback: bool = False
    log: str | None = None
    json: str | None = None
    signature: str | None = None
    signature_step: int = 1

    @classmethod
    def from_args(cls, args) -> WatchOptions:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def main(args: WatchOptions) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _usage("give the command after --, e.g. benchsuite watch -- python train.py")
    if args.every < 1 or args.confirm < 1 or args.replica_every < 1:
        return _usage("--every, --confirm and --replica-every must be at least 1")
    if args.signature_step < 1:
        return _usage("--signature-step must be at least 1")
    if args.signature_step != 1 and not args.signature:
        return _usage("--signature-step needs --signature PATH")
    for path, what in ((args.log, "--log"), (args.json if args.json != "-" else None, "--json"),
                       (args.signature, "--signature")):
        if path:
            err = _writable(path, what)
            if err:
                return _usage(err)
    with tempfile.TemporaryDirectory(prefix="benchsuite-watch-") as tmp:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SITE_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env[ENV_DIR] = tmp
        env[ENV_POLICY] = args.policy
        env[ENV_EVERY] = str(args.every)
        env[ENV_CONFIRM] = str(args.confirm)
        env[ENV_REPLICA_EVERY] = str(args.replica_every)
        env[ENV_RL] = "1" if args.rl else "0"
        env[ENV_TRACEBACK] = "1" if args.traceback else "0"
        if args.json:
            env[ENV_JSON] = "1"
        if args.log:
            env[ENV_LOG] = str(Path(args.log).expanduser().resolve())
        if args.signature:
            env[ENV_SIGNATURE] = str(Path(args.signature).expanduser().resolve())
            env[ENV_SIGNATURE_STEP] = str(args.signature_step)
            env[ENV_COMMAND] = json.dumps(command)
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(command, env=env)
        except OSError as exc:
            print(f"benchsuite watch: cannot start {command[0]!r}: {exc}", file=sys.stderr)
            return 127

        def forward(signum, frame):
            # Ctrl-C in a terminal reaches the script directly (same foreground process group): pass a
            # SIGINT on only when it was sent to watch alone; SIGTERM/SIGHUP always.
            if signum == signal.SIGINT and _terminal_foreground():
                return
            try:
                proc.send_signal(signum)
            except OSError:
                pass
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            returncode = proc.wait()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        code = _exit_status(returncode)
        wall = time.perf_counter() - t0
        procs = _summaries(Path(tmp))
    try:
        annotate(procs)
    except Exception:  # the catalogue must never change the exit status
        pass
    script_code = code
    code = _watch_code(args.policy, procs, code)
    try:
        print(render(procs, script_code, wall), file=sys.stderr)
    except Exception as exc:  # the summary must not change the exit status
        print(f"{PREFIX} could not render the summary: {exc!r}", file=sys.stderr)
    if code != script_code:
        print(_closing_line(procs, code, script_code), file=sys.stderr)
    if args.json:
        _write_json(args, command, code, script_code, wall, procs)
    return code


def _write_json(args: WatchOptions, command: list, code: int, script_code: int, wall: float,
                procs: list[dict]) -> None:
    doc = {"benchsuite_version": __version__, "command": command, "exit_code": code,
           "script_exit_code": script_code,
           "wall_seconds": wall, "policy": args.policy, "every": args.every, "confirm": args.confirm, "rl": args.rl,
           "verdict": verdict(procs), "attached": len(procs),
           "stopped": bool(code == STOPPED_EXIT and stopped_processes(procs)),
           "processes": [s for s in procs if s.get("optimizer_steps")],
           "other_processes": [{"pid": s["pid"], "argv": s.get("argv"), "error": s.get("error")}
                               for s in procs if not s.get("optimizer_steps")]}
    doc["known_cases"] = watch_known_cases(procs)  # the same data as the "known cases" lines
    assert args.json is not None  # called only with --json
    try:
        if args.json == "-":
            print(strictjson.dumps(doc, indent=2))
        else:
            Path(args.json).expanduser().write_text(strictjson.dumps(doc, indent=2))
    except OSError as exc:
        print(f"{PREFIX} could not write {args.json}: {exc}", file=sys.stderr)


def _terminal_foreground() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False
