from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

import pytest

# The tests mirror the package (tests/harness, tests/gradscan, ...); their shared helpers (procs, strict,
# fixture_cases) live here, beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from durations import configure as record_durations  # noqa: E402
from durations import mark_slow, measured, order_for_workers  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The tests' own cache, never the user's: the pinned environments the tests build (about 1 GB), uv's cache
# they are linked from, the CUDA emulator's binaries and matplotlib's font list go to $BENCHSUITE_TEST_CACHE,
# by default .pytest_cache/benchsuite in the checkout (git-ignored, kept between runs so that a rerun
# reuses what the last one built; `rm -rf .pytest_cache/benchsuite` gives the space back). Set here, before
# any test module is imported, so every process the tests start inherits it.
TEST_CACHE = Path(os.environ.get("BENCHSUITE_TEST_CACHE")
                  or Path(__file__).resolve().parent.parent / ".pytest_cache" / "benchsuite").resolve()
os.environ["BENCHSUITE_CACHE"] = str(TEST_CACHE)
os.environ["UV_CACHE_DIR"] = str(TEST_CACHE / "uv")
os.environ.setdefault("BENCHSUITE_CUDAEMU_CACHE", str(TEST_CACHE / "cudaemu"))  # a knob of the tests' own
os.environ["MPLCONFIGDIR"] = str(TEST_CACHE / "matplotlib")
# torch makes /tmp/torchinductor_<user> when torch._dynamo is imported (this process, the scripts watch runs); the
# harness and bench keep it in their work folders themselves, which test_cli checks without this
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(TEST_CACHE / "torchinductor"))


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # once, not in each pytest-xdist worker
        # The package's bytecode, beside its sources (__pycache__ is git-ignored). Under PYTHONDONTWRITEBYTECODE, set
        # here and in CI, each of the suite's few hundred processes compiled the modules it imports again: 0.4 s of a
        # `benchsuite list`. An edited module is compiled again when Python sees its source changed, as ever.
        compileall.compile_dir(Path(__file__).resolve().parent.parent / "benchsuite", quiet=1)
    # Many tests fork from this process (the harness's scenarios, the bench grid's configurations), as the
    # runner does from its fresh process. A child forked after torch's OpenMP pool has run a parallel region
    # here hangs at its first parallel op when it uses more than one thread (the pool's workers do not
    # exist in the child). One intra-op thread in this process never starts the pool, and the children set
    # their own thread counts.
    import torch
    torch.set_num_threads(1)
    record_durations(config)
    # `pytest -n 2` (pytest-xdist): tests marked xdist_group share a worker (the Ray tests one local cluster; the
    # tests of a module-wide fixture its one run, tests/durations.py), and the units go out in the order
    # durations.py gives them, longest first, not reordered by xdist.
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"
        config.option.loadscopereorder = False
    # A worker learns the mode from its command line alone (`-n 2` says "load"), so it would not tag its tests with
    # their group and the controller would spread them: the controller tells it (pytest_configure_node below).
    if getattr(config, "workerinput", {}).get("benchsuite_loadgroup"):
        config.option.loadgroup = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):  # pytest-xdist's hook, on the controller, once per worker it starts
    node.workerinput["benchsuite_loadgroup"] = node.config.getvalue("dist") == "loadgroup"


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    times = measured()
    mark_slow(items, times)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        order_for_workers(items, times)
    if _cuda():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
