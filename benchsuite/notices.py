"""benchsuite's own warning category (ground floor: imports nothing of benchsuite)."""
from __future__ import annotations


class ScannerWarning(RuntimeWarning):
    """benchsuite's own notices (the extension missing, a fallback taken): never a library's symptom, so the
    harness keeps them out of the warnings a case's ``Symptom(warning=...)`` is matched against."""
