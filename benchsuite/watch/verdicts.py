"""The verdict rules live in benchsuite.gradscan.verdicts (shared by watch, GradScanHook and GradScanCallback)."""
from ..gradscan.verdicts import *  # noqa: F401,F403
from ..gradscan.verdicts import CAUSES, TITLES, Tracker  # noqa: F401
