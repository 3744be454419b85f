"""A stop under `--policy raise`: what the watched process prints when the WatchProblemError it raised is not
caught, and what `benchsuite watch` says about it afterwards.

The script may catch WatchProblemError (an ordinary exception raised in its own `opt.step()` or `trainer.train()`).
Uncaught, it ends the process as any exception does (exit 1, atexit handlers run), but instead of a Python
traceback through the watcher's frames the process prints benchsuite's message; `watch --traceback` adds the
script's own traceback, cut where it enters torch or benchsuite. `benchsuite watch` then exits with STOPPED_EXIT.
"""
from __future__ import annotations

import os
import sys
import traceback

from .env import ENV_TRACEBACK, PREFIX

# `benchsuite watch --policy raise` stopped the script at a confirmed finding (in any process of the command,
# rank or launcher, that then exited non-zero). Distinct from 1 (a crash of the script) and from 3
# (FINDINGS_AT_END_EXIT in watch/cli.py: the script finished, a finding was confirmed at its end).
STOPPED_EXIT = 4

def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are not the script's: benchsuite's, and torch's (the optimizer's step wrapper)."""
    dirs = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep]
    torch_file = getattr(sys.modules.get("torch"), "__file__", None)
    if torch_file:
        dirs.append(os.path.dirname(os.path.abspath(torch_file)) + os.sep)
    return tuple(dirs)


def script_frames(tb) -> list[traceback.FrameSummary]:
    """The traceback's frames down to the call that entered torch or benchsuite (e.g. `opt.step()`)."""
    frames = traceback.extract_tb(tb)
    libs = _library_dirs()
    for i, fr in enumerate(frames):
        if os.path.abspath(fr.filename).startswith(libs):
            return list(frames[:i])
    return list(frames)


def is_stop(exc) -> bool:
    """The exception is, or was raised while handling, a WatchProblemError."""
    from .agent import WatchProblemError
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, WatchProblemError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def print_stop(exc, tb) -> None:
    """What the process prints for an uncaught WatchProblemError, in place of Python's traceback."""
    text = str(exc).strip()
    if os.environ.get(ENV_TRACEBACK) == "1":
        frames = script_frames(tb)
        sys.stderr.write(f"{PREFIX} the script's traceback, down to the call that was stopped (most recent call last; "
                         "benchsuite's and torch's frames left out):\n")
        sys.stderr.write("".join(traceback.format_list(frames)))
        hint = ""
    else:
        hint = " (`benchsuite watch --traceback` shows the script's traceback)"
    sys.stderr.write(f"{text}\n{PREFIX} the run was stopped by watch, not by an error of the script{hint}; "
                     f"benchsuite watch exits with code {STOPPED_EXIT}\n")
    sys.stderr.flush()


def stopped_processes(procs: list[dict]) -> list[dict]:
    """Processes whose stop was not caught by the script (it ended them)."""
    return [s for s in procs if (s.get("stopped") or {}).get("uncaught")]


def stop_lines(procs: list[dict], code: int) -> list[str]:
    """`benchsuite watch`'s closing line for a run it stopped."""
    out = []
    for s in stopped_processes(procs):
        st = s["stopped"]
        out.append(f"{PREFIX} exit code {STOPPED_EXIT}: watch stopped the run (--policy raise) at {st['where']} of "
                   f"rank {s.get('rank', 0)} ({st['title']}), not by an error of the script (the command "
                   f"exited {code} because of the stop)")
    return out[:1]
