"""Process hygiene for forked workers."""
from __future__ import annotations

import signal


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; no-op elsewhere).

    A case runs in its own process group (so a timeout can kill it with its scenario processes); that
    also puts it out of reach of a kill aimed at the runner's group. Without this, interrupting a run
    would leave a hung case sleeping for ever.
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
