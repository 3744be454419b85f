from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    # Many tests fork from this process (the harness's scenarios, the bench grid's configurations), as the
    # runner does from its fresh process. A child forked after torch's OpenMP pool has run a parallel region
    # here hangs at its first parallel op when it uses more than one thread (the pool's workers do not
    # exist in the child). One intra-op thread in this process never starts the pool, and the children set
    # their own thread counts.
    import torch
    torch.set_num_threads(1)


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
