# Loaded by every Python process that `benchsuite watch` starts (this folder is put first on
# PYTHONPATH). It attaches the gradient watcher, then hands over to any sitecustomize it shadows.
import os
import sys

try:
    from benchsuite.watch.hooks import install as _bs_install
    _bs_install()
except Exception as _bs_exc:  # never break the user's script
    sys.stderr.write(f"[benchsuite watch] not attached in pid {os.getpid()}: {_bs_exc!r}\n")

_here = os.path.dirname(os.path.abspath(__file__))
_saved = sys.modules.pop("sitecustomize", None)
_path = list(sys.path)
try:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    import sitecustomize  # noqa: F401  the one we shadowed, if any
except ImportError:
    if _saved is not None:
        sys.modules["sitecustomize"] = _saved
finally:
    sys.path[:] = _path
