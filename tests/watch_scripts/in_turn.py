"""Several training scripts in turn in this one process, as a sweep that trains one variant after another does:

    python in_turn.py SCRIPT ARGS... ;; SCRIPT ARGS... ;; ...

Each script runs as __main__ (runpy.run_path) with sys.argv set to its own command line. `sys.exit(0)` (or none) goes
on to the next script; a non-zero exit code ends the process with that code, and any other exception ends it as it
would end the script alone. "in_turn: finished K/N SCRIPT" is printed after each script. Every script's globals (its
models, optimizers, Trainers) are kept until the process ends, as a script's own are when `atexit` runs, so watch's
end-of-run verdicts see the same tensors as in a process of its own.
"""
import os
import runpy
import sys

SEPARATOR = ";;"


def commands(argv: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for arg in argv:
        if arg == SEPARATOR:
            out.append([])
        else:
            out[-1].append(arg)
    return [c for c in out if c]


kept = []  # each script's globals (or the SystemExit whose traceback holds them): alive until the process ends
todo = commands(sys.argv[1:])
for k, command in enumerate(todo, 1):
    sys.argv = list(command)
    try:
        kept.append(runpy.run_path(command[0], run_name="__main__"))
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
        kept.append(exc)
    print(f"in_turn: finished {k}/{len(todo)} {os.path.basename(command[0])}", flush=True)
