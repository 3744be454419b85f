"""Single-line mutants of csrc/gradscan_kernel.cu (and the launch geometry in csrc/gradscan.h) against tests/gradscan/test_cudaemu.py.

    python tests/cudaemu/mutants.py [--only ID,ID] [--write]      (from the repository root)

Each mutant changes one line of a copy of csrc/ (BENCHSUITE_CSRC points the tests at it); the
emulator tests run on it (not the emulator self-tests or the static checks, which do not read the
kernel's behaviour) and every test that fails is recorded. With --write the table goes to
docs/results/cuda-mutants.{md,json}. A mutant no test catches must be shown equivalent (`why`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "gradscan_kernel.cu"
FILES = [KERNEL, "gradscan.h"]  # a mutant changes the first of these that holds its text

# id, what, old text (must occur on exactly one line, or the `nth` occurrence), new text, why equivalent
MUTANTS = [
    ("barrier-1", "first __syncthreads of flush removed (thread 0 reads the warp totals unsynchronised)",
     "  __syncthreads();\n  if (threadIdx.x == 0) {", "  if (threadIdx.x == 0) {", 0, None),
    ("barrier-2", "second __syncthreads removed (next run overwrites the slots thread 0 still reads)",
     "  __syncthreads();  // the shared slots are reused by the next run", "", 0, None),
    ("publish-sum", "sum of squares published with a plain += instead of atomicAdd",
     "if (s != 0.0) atomicAdd(stats + t * kStatCols, s);", "if (s != 0.0) stats[t * kStatCols] += s;", 0, None),
    ("publish-counts", "counts published with plain += instead of atomicAdd",
     "if (tot[f]) atomicAdd(c + f, tot[f]);", "if (tot[f]) c[f] += tot[f];", 0, None),
    ("publish-max", "max published with a plain compare-and-store instead of atomicMax",
     "      atomicMax(reinterpret_cast<unsigned long long*>(stats + t * kStatCols + 1),",
     "      (m > stats[t * kStatCols + 1] ? (void)(stats[t * kStatCols + 1] = m) : (void)0), (void)(",
     0, None),
    ("shuffle-stride", "warp_sum (counts) stops one step early: stride 16..2",
     "  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);",
     "  for (int o = 16; o > 1; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);", 0, None),
    ("shuffle-direction", "warp_sum (sum of squares) shuffles up instead of down",
     "  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);",
     "  for (int o = 16; o > 0; o >>= 1) x += __shfl_up_sync(0xffffffffu, x, o);", 1, None),
    ("shuffle-xor-max", "warp_max uses a butterfly (__shfl_xor_sync) instead of shifting down",
     "x = fmax(x, __shfl_down_sync(0xffffffffu, x, o));", "x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));", 0,
     "a butterfly also leaves the warp's maximum in lane 0: the same result by another route"),
    ("forced-aligned", "every run takes the vector path (no scalar head for offset pointers)",
     "                                             : imin(e1 - e0, i64(((16 - (addr & 15)) & 15) / sizeof(T)));",
     "                                             : 0;", 0, None),
    ("head-bound", "scalar head bound off by one (j <= v0)",
     "for (i64 j = e0 + threadIdx.x; j < v0; j += kThreads)", "for (i64 j = e0 + threadIdx.x; j <= v0; j += kThreads)",
     0, None),
    ("tail-bound", "scalar tail bound off by one (j <= e1)",
     "for (i64 j = v0 + nvec * kVec + threadIdx.x; j < e1; j += kThreads)",
     "for (i64 j = v0 + nvec * kVec + threadIdx.x; j <= e1; j += kThreads)", 0, None),
    ("unroll-bound", "unrolled loop bound off by one (<= nvec)",
     "  i64 k = threadIdx.x;\n  for (; k + (kUnroll - 1) * kThreads < nvec; k += kUnroll * kThreads) {",
     "  i64 k = threadIdx.x;\n  for (; k + (kUnroll - 1) * kThreads <= nvec; k += kUnroll * kThreads) {", 0, None),
    ("run-end", "a run ends one element past the tensor",
     "const i64 e1 = imin((run_end - first) * kCudaChunkElems, numel);",
     "const i64 e1 = imin((run_end - first) * kCudaChunkElems, numel + 1);", 0, None),
    ("grid-blocks", "grid one block short (the last run of chunks is never scanned)",
     "return {(total_chunks + per_block - 1) / per_block, per_block};",
     "return {(total_chunks + per_block - 1) / per_block - (total_chunks > 1), per_block};", 0, None),
    ("search", "binary search picks the tensor before the right one (< instead of <=)",
     "if (table[mid * kTableCols + 3] <= c) lo = mid; else hi = mid - 1;",
     "if (table[mid * kTableCols + 3] < c) lo = mid; else hi = mid - 1;", 0,
     "a block starting at a tensor's first chunk begins at the tensor before, whose run is then empty "
     "(e0 >= e1: no element read, nothing published); the walk moves on to the right tensor. Results are "
     "the same; it costs one empty block reduction"),
    ("decode-bf16", "bf16 high half decoded with one mantissa bit lost",
     "return __uint_as_float(w & 0xffff0000u);", "return __uint_as_float(w & 0xfffe0000u);", 0, None),
    ("decode-f16", "fp16 high half taken from bits 15-30",
     "return BENCHSUITE_HALF_TO_FLOAT((unsigned short)(w >> 16)); }",
     "return BENCHSUITE_HALF_TO_FLOAT((unsigned short)(w >> 15)); }", 0, None),
    ("decode-f64", "fp64 slow path reads the words of a double swapped",
     "classify(__hiloint2double(int(u.y), int(u.x)), c);", "classify(__hiloint2double(int(u.x), int(u.y)), c);", 0,
     None),
    ("zero-count", "zero test on the fast path counts negatives too (<= 0)",
     "a.zero += (x == 0.0f);", "a.zero += (x <= 0.0f);", 0, None),
    ("ninf-count", "slow path counts +Inf as -Inf",
     "  c.ninf += (x == -inf_d());", "  c.ninf += (x == inf_d());", 0, None),
    ("tiny-check", "no slow path for tiny values (squares underflow in float)",
     "if (__builtin_expect(total < inf_f() && !(m < kTinyMax && m > 0.0f), 1)) {",
     "if (__builtin_expect(total < inf_f(), 1)) {", 0, None),
    ("nonfinite-check", "groups whose float sum is Inf stay on the fast path (<= instead of <)",
     "if (__builtin_expect(total < inf_f() && !(m < kTinyMax && m > 0.0f), 1)) {",
     "if (__builtin_expect(total <= inf_f() && !(m < kTinyMax && m > 0.0f), 1)) {", 0, None),
    ("lane-publish", "lane 1 instead of lane 0 writes its warp's totals",
     "  if (lane == 0) {", "  if (lane == 1) {", 0, None),
    ("table-guard", "the kernel's t < n guard dropped",
     "  while (c < c_end && t < n) {", "  while (c < c_end) {", 0,
     "only reachable with a table whose chunk column disagrees with its counts, which the host's "
     "check_table rejects before any launch (test_bad_chunk_total_is_an_error holds that check)"),
    ("zero-next-missing", "the idle accumulator is not zeroed (the next scan would add to old totals)",
     "i += stride) zero_next[i] = 0ULL;", "i += stride) (void)zero_next[i];", 0, None),
    ("zero-next-stride", "the zeroing loop strides one block too far (words between blocks stay dirty)",
     "  const long long stride = (long long)gridDim.x * kThreads;",
     "  const long long stride = (long long)(gridDim.x + 1) * kThreads;", 0, None),
    # The signature pass (benchsuite_gradscan_sig).
    ("sig-publish-barrier", "the signature's publication reads the shared buckets before every thread has flushed",
     "  __syncthreads();\n  if (threadIdx.x < kSigK) {", "  if (threadIdx.x < kSigK) {", 0, None),
    ("sig-publish-clear", "the shared buckets are not cleared after a chunk (the next chunk adds to them again)",
     "    shb[threadIdx.x] = 0.0f;\n  }\n  __syncthreads();", "  }\n  __syncthreads();", 0, None),
    ("sig-word-shift", "only the first sign word advances through the loop",
     "w0 >>= kShift, w1 >>= kShift;", "w0 >>= kShift;", 0, None),
    ("sig-flush-slot", "a 2-byte vector's second group is flushed to its first group's tile",
     "const unsigned int slot = slot0 + unsigned(e >> 2);", "const unsigned int slot = slot0;", 0, None),
    ("sig-sign-group", "both groups of a 2-byte vector take the first group's signs",
     "else sg = sig_sign(k < 4 ? ws0 : ws1, j);", "else sg = sig_sign(ws0, j);", 0, None),
    ("sig-nonfinite", "the slow path adds NaN and Inf into the sketch",
     "if (fabsf(x) < inf_f()) sk.add(j, k, x);", "sk.add(j, k, x);", 0, None),
    ("sig-scalar-parity", "the scalar path takes its sign from the wrong word of the tile",
     "sig_sign(sig_word(tile, m & 1u), int(m >> 1))", "sig_sign(sig_word(tile, 0u), int(m >> 1))", 0, None),
]


def apply(src: str, old: str, new: str, nth: int) -> str:
    starts = [m.start() for m in re.finditer(re.escape(old), src)]
    if len(starts) <= nth:
        raise SystemExit(f"mutant text not found: {old!r}")
    if nth == 0 and len(starts) > 1 and not old.startswith("  for (int o"):  # the warp loops share a line
        raise SystemExit(f"mutant text is ambiguous: {old!r}")
    i = starts[nth]
    return src[:i] + new + src[i + len(old):]


def run(mutant, workdir: Path) -> dict:
    mid, what, old, new, nth, why = mutant
    csrc = workdir / mid
    shutil.copytree(ROOT / "csrc", csrc)
    target = next((csrc / f for f in FILES if old in (csrc / f).read_text()), csrc / KERNEL)
    target.write_text(apply(target.read_text(), old, new, nth))
    env = {**os.environ, "BENCHSUITE_CSRC": str(csrc), "BENCHSUITE_CUDAEMU_TIMEOUT": "120"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "tests/gradscan/test_cudaemu.py",
                        "-k", "not emulator and not static"], cwd=ROOT, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"FAILED tests/gradscan/test_cudaemu.py::(\w+)", r.stdout)))
    compile_error = "build of driver" in r.stdout and len(failed) > 0 and all(
        "build of driver" in line for line in r.stdout.splitlines() if line.startswith("FAILED"))
    reasons = {}
    for name in failed:
        m = re.search(rf"FAILED tests/gradscan/test_cudaemu.py::{name} - (.*)", r.stdout)
        reasons[name] = (m.group(1)[:120] if m else "")
    return {"id": mid, "what": what, "caught_by": failed, "compile_error": compile_error, "why_equivalent": why,
            "seconds": round(time.time() - t0, 1), "first_reasons": reasons}


def markdown(rows: list[dict]) -> str:
    lines = ["# Mutants of the CUDA kernel", "",
             "`python tests/cudaemu/mutants.py --write`: each mutant changes one line of `csrc/gradscan_kernel.cu` (or the grid in `csrc/gradscan.h`); "
             "`tests/gradscan/test_cudaemu.py` (emulated kernel under 5 schedules, ASan+UBSan, TSan with two workers, CPU core "
             "and oracle comparison) runs on it. Tests: planted = test_planted_values_every_schedule, small = "
             "test_many_small_tensors, chunks = test_one_block_per_chunk, asan = test_asan_ubsan, tsan = "
             "test_tsan_two_workers, dtype = test_unknown_dtype_is_an_error, zeroing = "
             "test_idle_accumulator_zeroed_by_few_blocks, host-path = test_host_path_through_an_emulated_driver, "
             "raw-dtype = test_kernel_never_reports_an_unknown_dtype_clean, sig = "
             "test_signature_pass_matches_the_definition, sig-san = test_signature_pass_sanitizers.", "",
             "| mutant | change | caught by |", "|---|---|---|"]
    short = {"test_planted_values_every_schedule": "planted", "test_many_small_tensors": "small",
             "test_one_block_per_chunk": "chunks", "test_asan_ubsan": "asan", "test_tsan_two_workers": "tsan",
             "test_unknown_dtype_is_an_error": "dtype", "test_idle_accumulator_zeroed_by_few_blocks": "zeroing",
             "test_host_path_through_an_emulated_driver": "host-path",
             "test_kernel_never_reports_an_unknown_dtype_clean": "raw-dtype",
             "test_signature_pass_matches_the_definition": "sig", "test_signature_pass_sanitizers": "sig-san"}
    for r in rows:
        caught = ", ".join(short.get(n, n) for n in r["caught_by"])
        if r["compile_error"]:
            caught = "does not compile"
        elif not r["caught_by"]:
            caught = f"not caught; equivalent: {r['why_equivalent']}" if r["why_equivalent"] else "**NOT CAUGHT**"
        lines.append(f"| {r['id']} | {r['what']} | {caught} |")
    n_behaviour = sum(1 for r in rows if not r["why_equivalent"] and not r["compile_error"])
    n_caught = sum(1 for r in rows if r["caught_by"] and not r["compile_error"] and not r["why_equivalent"])
    lines += ["", f"{n_caught} of {n_behaviour} behaviour-changing mutants caught; "
              f"{sum(1 for r in rows if r['why_equivalent'])} equivalent."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--render" in sys.argv:  # the table again from the JSON, with the current `why` texts
        why = {m[0]: m[5] for m in MUTANTS}
        rows = json.loads((ROOT / "docs" / "results" / "cuda-mutants.json").read_text())
        for r in rows:
            r["why_equivalent"] = why.get(r["id"])
        (ROOT / "docs" / "results" / "cuda-mutants.json").write_text(json.dumps(rows, indent=1) + "\n")
        (ROOT / "docs" / "results" / "cuda-mutants.md").write_text(markdown(rows))
        sys.exit(0)
    only = None
    if "--only" in sys.argv:
        only = set(sys.argv[sys.argv.index("--only") + 1].split(","))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in MUTANTS:
            if only and m[0] not in only:
                continue
            row = run(m, Path(d))
            rows.append(row)
            print(json.dumps(row), flush=True)
    if "--write" in sys.argv:
        (ROOT / "docs" / "results" / "cuda-mutants.json").write_text(json.dumps(rows, indent=1) + "\n")
        (ROOT / "docs" / "results" / "cuda-mutants.md").write_text(markdown(rows))
