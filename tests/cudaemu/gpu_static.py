"""Static GPU checks without a GPU: ptxas resource usage and SASS instructions per element.

    python tests/cudaemu/gpu_static.py [--write]     (from the repository root)

Compiles csrc/gradscan_kernel.cu with nvcc for each target architecture, plus per-dtype probe kernels
that contain only scan_run<T> (so each probe's SASS holds one dtype's loops), reads `ptxas -v`
(registers, spills) and disassembles with cuobjdump (PyPI: nvidia-cuda-cuobjdump, which needs
nvidia-cuda-nvdisasm). The vector loop of a probe is the loop (backward branch) holding the most
16-byte loads; instructions per element = instructions in that loop / (16-byte loads x elements per
vector). With --write the figures go to docs/results/cuda-static.{json,md}.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CSRC = Path(os.environ.get("BENCHSUITE_CSRC", ROOT / "csrc")).resolve()
ARCHS = ["80", "90"]  # CMakeLists.txt's CMAKE_CUDA_ARCHITECTURES default
PROBES = {"float32": ("float", 4), "float16": ("benchsuite::f16", 8), "bfloat16": ("benchsuite::bf16", 8),
          "float64": ("double", 2)}
PROBE_SRC = "\n".join(
    f'extern "C" __global__ void __launch_bounds__(benchsuite::kThreads, benchsuite::kMinBlocks) probe_{name}(const {t}* p, long long e0, long long e1, double* out) {{\n'
    f"  benchsuite::Acc a;\n  benchsuite::scan_run(p, e0, e1, a);\n"
    f"  out[threadIdx.x] = a.ss + a.am + a.nan + a.pinf + a.ninf + a.zero;\n}}"
    for name, (t, _) in PROBES.items())
# The signature pass's chunk (its vector loop, the chunk's sign words and flush, the block's publication).
SIG_PROBES = {k: v for k, v in PROBES.items() if k != "float64"}  # fp64 takes the scalar path
PROBE_SRC += "\n" + "\n".join(
    f'extern "C" __global__ void __launch_bounds__(benchsuite::kThreads, benchsuite::kSigMinBlocks) probe_sig_{name}(const {t}* p, long long c, long long ce1, double* out) {{\n'
    f"  __shared__ float shb[benchsuite::kSigK];\n  benchsuite::Acc a;\n  benchsuite::sig_chunk_vectors(p, c, ce1, a, shb);\n"
    f"  benchsuite::sig_publish(shb, out + 256, 0);\n"
    f"  out[threadIdx.x] = a.ss + a.am + a.nan + a.pinf + a.ninf + a.zero;\n}}"
    for name, (t, _) in SIG_PROBES.items())


def tool(name: str) -> str | None:
    """nvcc from PATH/CUDA_HOME; cuobjdump/nvdisasm from PATH or the nvidia-cuda-* wheels."""
    found = shutil.which(name)
    if found:
        return found
    for base in [os.environ.get("CUDA_HOME", "/usr/local/cuda")]:
        cand = Path(base) / "bin" / name
        if cand.exists():
            return str(cand)
    try:
        import nvidia  # namespace package of the nvidia-* wheels
        for p in nvidia.__path__:
            for cand in Path(p).glob(f"*/bin/{name}"):
                return str(cand)
    except ImportError:
        pass
    return None


def missing_tools() -> list[str]:
    return [t for t in ("nvcc", "cuobjdump", "nvdisasm") if tool(t) is None]


def compile_cubin(arch: str, workdir: Path) -> tuple[Path, str]:
    src = workdir / "probe.cu"
    src.write_text((CSRC / "gradscan_kernel.cu").read_text() + "\n" + PROBE_SRC + "\n")
    shutil.copy(CSRC / "gradscan_abi.h", workdir / "gradscan_abi.h")
    out = workdir / f"probe_{arch}.cubin"
    r = subprocess.run([tool("nvcc"), "-cubin", f"-arch=sm_{arch}", "-O3", "-std=c++17", "-Xptxas", "-v",
                        str(src), "-o", str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return out, r.stderr


def compile_cubin_nvrtc(arch: str, workdir: Path) -> tuple[Path, str]:
    """The same probe source compiled by NVRTC (the route users get: benchsuite/gradscan/_cuda.py)."""
    sys.path.insert(0, str(ROOT))
    from benchsuite.gradscan import _cuda
    nv, err = _cuda.nvrtc()
    if nv is None:
        raise RuntimeError(err)
    source = (CSRC / "gradscan_kernel.cu").read_text() + "\n" + PROBE_SRC + "\n"
    image, log = nv.compile(source, {"gradscan_abi.h": (CSRC / "gradscan_abi.h").read_text()},
                            _cuda.kernel_options(f"sm_{arch}") + ["--ptxas-options=-v"])
    out = workdir / f"probe_nvrtc_{arch}.cubin"
    out.write_bytes(image)
    return out, log


def parse_ptxas(log: str) -> dict[str, dict]:
    res, fn, props = {}, None, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            fn = {"benchsuite_gradscan": "scan_kernel", "benchsuite_gradscan_sig": "sig_kernel"}.get(m.group(1), m.group(1))
            res[fn] = {}
        # "Function properties for X" names the function whose stack/spill line follows: an entry function,
        # or a device function called from it (never one to book on the entry's account).
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            props = {"benchsuite_gradscan": "scan_kernel", "benchsuite_gradscan_sig": "sig_kernel"}.get(m.group(1), m.group(1))
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and props in res:
            res[props].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m and fn:
            res[fn]["registers"] = int(m.group(1))
    return res


INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def sass(cubin: Path, function: str) -> list[tuple[int, str, str, bool]]:
    env = {**os.environ, "PATH": f"{Path(tool('nvdisasm')).parent}:{os.environ.get('PATH', '')}"}
    r = subprocess.run([tool("cuobjdump"), "-sass", "-fun", function, str(cubin)], capture_output=True, text=True,
                       env=env, check=True)
    return [(int(m.group(1), 16), m.group(3), m.group(4), bool(m.group(2))) for m in INSN.finditer(r.stdout)]


def shortest_path(body: list[tuple[int, str, str, bool]]) -> int:
    """Fewest instructions from the loop's first instruction to its back-edge (the last one): the fast
    path, when the only branches inside the loop pick between a fast and a slow path."""
    index = {addr: i for i, (addr, _, _, _) in enumerate(body)}
    inf = float("inf")
    dist = [inf] * len(body)
    dist[0] = 1
    for i, (addr, op, args, predicated) in enumerate(body):  # forward edges only: one pass in order
        if dist[i] == inf or i == len(body) - 1:
            continue
        succ = []
        m = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
        if m and int(m.group(1), 16) in index and int(m.group(1), 16) > addr:
            succ.append(index[int(m.group(1), 16)])
        if (predicated or not op.startswith("BRA")) and op not in ("EXIT", "RET"):
            succ.append(i + 1)  # falls through (a predicated branch may not be taken)
        for j in succ:
            dist[j] = min(dist[j], dist[i] + 1)
    return int(dist[-1]) if dist[-1] != inf else len(body)


def vector_loop(insns: list[tuple[int, str, str, bool]]) -> dict:
    """The loop with the most 16-byte loads (smallest on ties): its size and its loads."""
    best = None
    for addr, op, args, _ in insns:
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", args)
            if not m or int(m.group(1), 16) >= addr:
                continue
            lo = int(m.group(1), 16)
            body = [i for i in insns if lo <= i[0] <= addr and i[1] != "NOP"]
            loads = sum(1 for i in body if i[1].startswith("LDG") and ".128" in i[1])
            key = (loads, -len(body))
            if loads and (best is None or key > best[0]):
                best = (key, len(body), loads, lo, addr)
    if best is None:
        return {}
    body = [i for i in insns if best[3] <= i[0] <= best[4] and i[1] != "NOP"]
    return {"instructions": best[1], "fast_path": shortest_path(body), "loads_16B": best[2],
            "start": hex(best[3]), "end": hex(best[4])}


def loop_ranges(insns: list[tuple[int, str, str, bool]]) -> list[tuple[int, int]]:
    """Every backward branch's range (start, end)."""
    out = []
    for addr, op, args, _ in insns:
        m = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
        if m and int(m.group(1), 16) < addr:
            out.append((int(m.group(1), 16), addr))
    return out


def kernel_spills(insns: list[tuple[int, str, str, bool]]) -> dict:
    """Local-memory spill instructions of the whole kernel, and those inside its innermost vector loops
    (loops holding 16-byte loads and no other such loop): the only ones paid per element."""
    spills = [a for a, op, _, _ in insns if op.startswith(("STL", "LDL"))]
    loops = []
    for addr, op, args, _ in insns:
        m = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
        if m and int(m.group(1), 16) < addr:
            lo = int(m.group(1), 16)
            if any(lo <= a <= addr and o.startswith("LDG") and ".128" in o for a, o, _, _ in insns):
                loops.append((lo, addr))
    inner = [(lo, hi) for lo, hi in loops if not any((lo, hi) != (l2, h2) and lo <= l2 and h2 <= hi for l2, h2 in loops)]
    return {"spill_instructions": len(spills),
            "spills_in_vector_loops": sum(1 for a in spills if any(lo <= a <= hi for lo, hi in inner)),
            "vector_loops": len(inner)}


def measure(compiler: str = "nvcc") -> dict:
    """Figures of the kernel as ``compiler`` ("nvcc", or "nvrtc": the library users' first scan uses) builds it."""
    if compiler == "nvcc":
        version = subprocess.run([tool("nvcc"), "--version"], capture_output=True, text=True).stdout
        out = {"compiler": "nvcc", "nvcc": re.search(r"release ([\d.]+), V([\d.]+)", version).group(2), "archs": {}}
        build = compile_cubin
    else:
        sys.path.insert(0, str(ROOT))
        from benchsuite.gradscan import _cuda
        nv, err = _cuda.nvrtc()
        if nv is None:
            raise RuntimeError(err)
        out = {"compiler": "nvrtc", "nvrtc": f"{nv.version[0]}.{nv.version[1]}", "archs": {}}
        build = compile_cubin_nvrtc
    with tempfile.TemporaryDirectory() as d:
        for arch in ARCHS:
            cubin, log = build(arch, Path(d))
            res = {"ptxas": parse_ptxas(log), "loops": {}, "kernel": kernel_spills(sass(cubin, "benchsuite_gradscan"))}
            for name, (_, per_vec) in PROBES.items():
                loop = vector_loop(sass(cubin, f"probe_{name}"))
                if loop:
                    loop["elements"] = loop["loads_16B"] * per_vec
                    loop["per_element"] = round(loop["instructions"] / loop["elements"], 2)
                    loop["fast_path_per_element"] = round(loop["fast_path"] / loop["elements"], 2)
                res["loops"][name] = loop
            res["sig_kernel"] = kernel_spills(sass(cubin, "benchsuite_gradscan_sig"))
            res["sig_loops"] = {}
            for name, (_, per_vec) in SIG_PROBES.items():
                insns = sass(cubin, f"probe_sig_{name}")
                loop = vector_loop(insns)
                if loop:
                    loop["elements"] = loop["loads_16B"] * per_vec
                    loop["per_element"] = round(loop["instructions"] / loop["elements"], 2)
                    loop["fast_path_per_element"] = round(loop["fast_path"] / loop["elements"], 2)
                    # Once per chunk and thread (256 elements of a full chunk): everything outside the
                    # probe's loops and its out-of-line slow-path functions (CALL targets onwards).
                    loops = loop_ranges(insns)
                    callees = [int(m.group(1), 16) for _, op, args, _ in insns if op.startswith("CALL")
                               for m in [re.search(r"0x([0-9a-f]+)", args)] if m]
                    end = min(callees, default=insns[-1][0] + 1)
                    loop["per_chunk"] = sum(1 for a, op, _, _ in insns if a < end and op not in ("NOP", "EXIT")
                                            and not any(lo <= a <= hi for lo, hi in loops))
                res["sig_loops"][name] = loop
            out["archs"][f"sm_{arch}"] = res
    return out


# Public datasheet figures of a few GPUs (memory bandwidth GB/s, multiprocessors, boost clock MHz) and the
# architecture whose SASS stands in for theirs (sm_89 parts take the sm_80 figures: an approximation).
GPUS = [("A100 SXM4 80GB", 2039, 108, 1410, "sm_80"), ("L4", 300, 58, 2040, "sm_80"),
        ("RTX 4090", 1008, 128, 2520, "sm_80"), ("H100 SXM5", 3352, 132, 1980, "sm_90"),
        ("H200 SXM", 4800, 132, 1980, "sm_90")]
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
CHUNK_PER_THREAD = 256  # elements of one full chunk per thread (65536 / 256 threads)


def sig_estimates(res: dict) -> list[dict]:
    """Per GPU and dtype: time per element of the plain scan and of the signature pass, each the larger of
    reading its bytes at the spec bandwidth and issuing its instructions (fast path; the signature's
    per-chunk instructions spread over the chunk's 256 elements per thread, counted in full: an upper
    bound) at one warp instruction per scheduler per clock (4 per multiprocessor). An estimate, not a
    measurement."""
    out = []
    for gpu, bw, sms, mhz, arch in GPUS:
        r = res["archs"].get(arch)
        if not r:
            continue
        issue = sms * 128 * mhz * 1e6  # thread instructions per second
        for name, nbytes in BYTES.items():
            plain, sig = r["loops"][name], r["sig_loops"].get(name)
            if not plain or not sig:
                continue
            mem = nbytes / (bw * 1e9)
            i_plain = plain["fast_path_per_element"]
            i_sig = sig["fast_path_per_element"] + sig["per_chunk"] / CHUNK_PER_THREAD
            t_plain, t_sig = max(mem, i_plain / issue), max(mem, i_sig / issue)
            out.append({"gpu": gpu, "arch": arch, "dtype": name, "instr_plain": i_plain, "instr_sig": round(i_sig, 2),
                        "instr_budget": round(mem * issue, 1), "extra_time_pct": round(100 * (t_sig / t_plain - 1), 1)})
    return out


def sig_markdown(res: dict) -> list[str]:
    lines = ["", "## The signature pass (`benchsuite_gradscan_sig`)", "",
             "Each tensor's count sketch (benchsuite/gradscan/signature.py) with its sum of squares and non-finite "
             "counts, in one read; used once per gradient comparison, never by the per-step scan: "
             "`benchsuite_gradscan` above is unchanged. It counts no zeros and takes no max |x| (a signature needs "
             "neither), which pays for the sketch's multiply-add and sign per element. A first version that also "
             "counted both (commit 4e59273) took 8.97-9.50 instructions per element on the fast path, 22-26% more "
             "than the plain scan. Probes hold one "
             "chunk of `sig_chunk_vectors` and the block's publication. Per chunk = instructions outside the probe's "
             "loops and slow-path functions, once per thread and chunk (256 elements): an upper bound, since it "
             "includes the set-up of the remainder and tail loops a full chunk skips.", "",
             "| arch | dtype | registers | fast path/element | plain scan | extra/element | extra | per chunk (upper bound) |",
             "|---|---|---|---|---|---|---|---|"]
    for arch, r in res["archs"].items():
        for name, loop in r.get("sig_loops", {}).items():
            plain = r["loops"][name]["fast_path_per_element"]
            regs = r["ptxas"].get(f"probe_sig_{name}", {}).get("registers")
            lines.append(f"| {arch} | {name} | {regs} | {loop['fast_path_per_element']} | {plain} | "
                         f"{loop['fast_path_per_element'] - plain:.2f} | "
                         f"{100 * (loop['fast_path_per_element'] / plain - 1):.0f}% | {loop['per_chunk']} |")
    k = {a: r.get("sig_kernel", {}) for a, r in res["archs"].items()}
    lines += ["", "Whole signature kernel: " + "; ".join(
        f"{a}: {r['ptxas'].get('sig_kernel', {}).get('registers')} registers, "
        f"{k[a].get('spill_instructions')} spill instructions, {k[a].get('spills_in_vector_loops')} in vector loops"
        for a, r in res["archs"].items()) + ".", "",
        "**Estimated time** (not measured: no GPU). Per element, the larger of reading it at the datasheet "
        "bandwidth and issuing its instructions at one warp instruction per scheduler per clock; the signature's "
        "per-chunk instructions counted in full. `budget` is the instructions per element a GPU can issue in the "
        "time it reads one; below it a pass is bound by memory and extra instructions cost no time.", "",
        "| GPU | SASS of | dtype | plain scan instr/element | signature pass instr/element | budget | estimated extra time |",
        "|---|---|---|---|---|---|---|"]
    for e in sig_estimates(res):
        lines.append(f"| {e['gpu']} | {e['arch']} | {e['dtype']} | {e['instr_plain']} | {e['instr_sig']} | "
                     f"{e['instr_budget']} | {e['extra_time_pct']}% |")
    return lines


def markdown(res: dict, baseline: dict | None = None) -> str:
    lines = ["# CUDA scanner: static figures (no GPU)", "",
             f"`python tests/cudaemu/gpu_static.py --write` (nvcc {res['nvcc']}): `nvcc -cubin -O3 -Xptxas -v` per "
             "architecture; SASS from `cuobjdump -sass` (PyPI nvidia-cuda-cuobjdump + nvidia-cuda-nvdisasm) of "
             "probe kernels (the kernel's launch bounds) that hold one dtype's `scan_run` each. Per element = instructions in the loop with the "
             "most 16-byte loads / elements those loads bring; the fast path is the shortest way through that loop "
             "(no NaN/Inf, no overflow, no tiny values: the path every clean gradient takes). Held by "
             "tests/gradscan/test_cudaemu.py::test_static_gpu_figures. Estimates of work, not GPU timings.",
             "", "| arch | function | registers | spill stores/loads | stack |", "|---|---|---|---|---|"]
    for arch, r in res["archs"].items():
        for fn, p in r["ptxas"].items():
            lines.append(f"| {arch} | {fn} | {p.get('registers')} | {p.get('spill_stores', 0)}/{p.get('spill_loads', 0)} "
                         f"| {p.get('stack', 0)} |")
    lines += ["", "| arch | dtype | loop instructions | fast path | 16-byte loads | elements | "
              "loop instructions/element | fast path/element |", "|---|---|---|---|---|---|---|---|"]
    for arch, r in res["archs"].items():
        for name, loop in r["loops"].items():
            lines.append(f"| {arch} | {name} | {loop.get('instructions')} | {loop.get('fast_path')} | "
                         f"{loop.get('loads_16B')} | {loop.get('elements')} | {loop.get('per_element')} | "
                         f"{loop.get('fast_path_per_element')} |")
    lines += ["", "Spills of the whole kernel (`benchsuite_gradscan`; ptxas books them on the entry function): local-memory "
              "instructions in its SASS, and how many sit inside a vector loop (the only place they would cost per "
              "element). Before this table, the parser booked the called `classify_vec` functions' zero spills on the "
              "entry function, so a few spilled words around the per-tensor loop went unreported.", "",
              "| compiler | arch | registers | spill stores/loads (bytes) | spill instructions | in vector loops |",
              "|---|---|---|---|---|---|"]
    for label, r_all in (("nvcc " + res["nvcc"], res), *([("NVRTC " + res["nvrtc"]["nvrtc"], res["nvrtc"])]
                                                          if res.get("nvrtc") else [])):
        for arch, r in r_all["archs"].items():
            k, sp = r["ptxas"]["scan_kernel"], r.get("kernel", {})
            lines.append(f"| {label} | {arch} | {k.get('registers')} | {k.get('spill_stores', 0)}/{k.get('spill_loads', 0)} | "
                         f"{sp.get('spill_instructions')} | {sp.get('spills_in_vector_loops')} |")
    if res.get("nvrtc"):
        lines += ["", f"The same probes compiled by NVRTC {res['nvrtc']['nvrtc']} (what a user's first scan compiles):", "",
                  "| arch | dtype | loop instructions/element | fast path/element |", "|---|---|---|---|"]
        for arch, r in res["nvrtc"]["archs"].items():
            for name, loop in r["loops"].items():
                lines.append(f"| {arch} | {name} | {loop.get('per_element')} | {loop.get('fast_path_per_element')} |")
    if res["archs"] and all("sig_loops" in r for r in res["archs"].values()):
        lines += sig_markdown(res)
    if baseline:
        lines += ["", f"Before the rewrite ({baseline.get('source', 'baseline')}): every element classified four ways, "
                  "max and sum in double; no slow path, so the loop is the fast path.", "",
                  "| arch | scan_kernel registers | spills | float32 | float16 | bfloat16 | float64 |",
                  "|---|---|---|---|---|---|---|"]
        for arch, r in baseline["archs"].items():
            k = r["ptxas"]["scan_kernel"]
            per = [str(r["loops"][n].get("per_element")) for n in PROBES]
            lines.append(f"| {arch} | {k.get('registers')} | {k.get('spill_stores', 0)} | " + " | ".join(per) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    miss = missing_tools()
    if miss:
        sys.exit(f"missing: {', '.join(miss)} (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    result = measure()
    try:
        result["nvrtc"] = measure("nvrtc")
    except RuntimeError as exc:  # no NVRTC here: the nvcc figures alone
        print(f"NVRTC figures skipped: {exc}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    if "--write" in sys.argv:
        old = ROOT / "docs" / "results" / "cuda-static.json"
        base = json.loads(old.read_text()).get("baseline") if old.exists() else None
        if "--baseline" in sys.argv:  # a JSON written by this script for an older csrc/ (BENCHSUITE_CSRC)
            base = json.loads(Path(sys.argv[sys.argv.index("--baseline") + 1]).read_text())
            result["baseline"] = base
        (ROOT / "docs" / "results" / "cuda-static.json").write_text(json.dumps(result, indent=1) + "\n")
        (ROOT / "docs" / "results" / "cuda-static.md").write_text(markdown(result, base))
