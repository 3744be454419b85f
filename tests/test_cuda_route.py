"""How the CUDA kernel reaches a GPU, checked without one: NVRTC compiles the kernel the extension carries
for each architecture users have, the shipped fatbin holds what the build says, the route and the driver
floor are what the docs say, a machine without a driver falls back with the reason, and selftest passes.
(The host path against an emulated driver is in tests/test_cudaemu.py.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchsuite.gradscan import _cuda

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cudaemu"))
import gpu_static  # noqa: E402  (finds cuobjdump in the nvidia-cuda-cuobjdump wheel)


def _cuobjdump(*args: str) -> str:
    tool = gpu_static.tool("cuobjdump")
    if tool is None:
        pytest.skip("no cuobjdump (pip install nvidia-cuda-cuobjdump)")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=True).stdout


def _nvrtc():
    nv, err = _cuda.nvrtc()
    if nv is None:
        pytest.skip(err)
    return nv


@pytest.mark.parametrize("arch", [80, 86, 89, 90])
def test_nvrtc_compiles_the_embedded_kernel_to_sass(arch, tmp_path, monkeypatch):
    """The route a user with torch's CUDA wheels gets: SASS for the GPU's own architecture, cached on disk."""
    monkeypatch.setenv("BENCHSUITE_CACHE", str(tmp_path / "cache"))
    nv = _nvrtc()
    target, note = _cuda.pick_target(nv, (arch // 10, arch % 10))
    assert target == f"sm_{arch}" and note is None
    image, facts = _cuda.compile_kernel(nv, target)
    assert image[:4] == b"\x7fELF" and facts["cached"] is False and facts["compile_seconds"] > 0
    cubin = tmp_path / "k.cubin"
    cubin.write_bytes(image)
    assert f"sm_{arch}" in _cuobjdump("-lelf", str(cubin))
    assert "Function benchsuite_gradscan" in _cuobjdump("-res-usage", str(cubin))
    again, facts2 = _cuda.compile_kernel(nv, target)
    assert again == image and facts2["cached"] is True and Path(facts2["cache_file"]).is_file()


def test_targets_for_gpus_nvrtc_knows_and_does_not():
    nv = _nvrtc()
    newest, oldest = max(nv.archs), min(nv.archs)
    # A GPU newer than this NVRTC: PTX of the newest architecture it knows, for the driver to compile.
    target, note = _cuda.pick_target(nv, ((newest + 10) // 10, 0))
    assert target == f"compute_{newest}" and "has no SASS" in note
    with pytest.raises(RuntimeError, match="cannot compile for"):
        _cuda.pick_target(nv, (oldest // 10 - 1, 0))


def test_driver_floor_follows_cuda_minor_version_compatibility():
    assert _cuda.driver_floor(12) == ("527.41" if sys.platform == "win32" else "525.60.13")
    assert _cuda.driver_floor(11) == ("452.39" if sys.platform == "win32" else "450.80.02")
    assert _cuda.driver_floor(13).startswith("580")
    assert _cuda.cuda_version_text(12040) == "12.4" and _cuda.cuda_version_text(13000) == "13.0"


def test_shipped_fatbin_holds_every_built_architecture():
    fat = _cuda.fatbin_path()
    if fat is None:
        pytest.skip("this build has no fatbin (no nvcc at build time)")
    from benchsuite import _core
    archs = _core.build_info()["fatbin_architectures"].split(",")
    listing = _cuobjdump("-lelf", "-lptx", str(fat))
    for a in archs:
        assert f"sm_{a}.cubin" in listing, (a, listing)
    assert f"sm_{archs[-1]}.ptx" in listing  # PTX of the newest, for GPUs after it


def test_no_driver_means_torch_with_the_reason_and_info_says_the_floor():
    facts, err = _cuda.driver()
    if facts is not None:
        pytest.skip("an NVIDIA driver is present")
    st = _cuda.load_kernel(0)
    assert not st.ready and "libcuda" in st.error
    out = subprocess.run([sys.executable, "-m", "benchsuite", "info"], capture_output=True, text=True,
                         check=True).stdout
    assert "driver found   none usable (libcuda.so.1 could not be loaded" in out
    nv = _cuda.nvrtc()[0]
    if nv is not None:
        assert f"driver needed  >= {_cuda.driver_floor(nv.version[0])}" in out
        assert f"NVRTC {nv.version[0]}.{nv.version[1]}" in out
    js = json.loads(subprocess.run([sys.executable, "-m", "benchsuite", "info", "--json"], capture_output=True,
                                   text=True, check=True).stdout)
    assert js["cuda"]["driver_error"] and js["cuda"]["devices"] == []


def test_selftest_passes_on_every_backend_here(tmp_path):
    out = tmp_path / "selftest.json"
    r = subprocess.run([sys.executable, "-m", "benchsuite", "selftest", "--json", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("selftest: PASS")
    res = json.loads(out.read_text())
    assert res["kind"] == "selftest" and res["ok"] and res["tensors"] > 300
    status = {b["backend"]: b["status"] for b in res["backends"]}
    assert status["cpu-core"] == "agrees" and status["torch-cpu"] == "agrees"
    assert "for a bug report:" in r.stdout and "kernel routes:" in r.stdout


def test_selftest_catches_a_wrong_backend():
    """The verdict is not green by construction: a reference that disagrees makes it fail."""
    from benchsuite.gradscan import planted
    suite = planted.probe_suite()
    want = [planted.reference(t) for t in suite.tensors]
    wrong = [tuple(w[:3]) + (w[3] + 1,) + tuple(w[4:]) if i == 3 else w for i, w in enumerate(want)]
    assert planted.mismatches(suite.labels, want, want) == []
    bad = planted.mismatches(suite.labels, wrong, want)
    assert len(bad) == 1 and suite.labels[3] in bad[0]
