"""The `benchsuite` command: the parser assembled from benchsuite/commands/, and the exit codes."""
from __future__ import annotations

import argparse
import os
import sys

from .commands import MODULES as COMMANDS
from .common import UsageError, version


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="benchsuite", description=(
        "Reproduce reported fine-tuning failures, verify their fixes, scan gradients, benchmark memory."),
        epilog="Pinned environments are cached in $BENCHSUITE_CACHE (default ~/.cache/benchsuite); "
               "`benchsuite cache list` shows them.")
    ap.add_argument("--version", action="version", version=f"benchsuite {version()}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Usage errors exit 2 (one line on stderr), Ctrl-C 130, a reader that went away 141."""
    args = build_parser().parse_args(argv)
    prog = f"benchsuite {args.command}"
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`benchsuite list --json | head`): stop quietly, as cat or git do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141


if __name__ == "__main__":
    sys.exit(main())
