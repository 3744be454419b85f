"""`benchsuite scan-bench`: the fused scanner against torch ways of computing the same statistics.

Methods (same per-tensor outputs as the scanner, except the roofline):
  fused     benchsuite.gradscan.scan_tensors (one pass in benchsuite._core)
  loop      a per-parameter torch loop (isnan/isposinf/isneginf/eq/where/sum/max per tensor, one sync)
  foreach   the fastest torch composite we could write: multi-tensor _foreach_norm (ord 2 and inf) plus
            count_nonzero per tensor (exact; _foreach_norm's ord 0 counts in float32 and saturates at
            2^24), exact per-tensor recount only where a norm is non-finite. Its float32 L2 is
            accumulated by torch in float32: on CPU up to ~1e-2 relative error on large tensors,
            reported as sumsq_max_rel_err.
  amp_check torch._amp_foreach_non_finite_check_and_unscale_ at scale 1 (CUDA only, fp32/fp16): what
            GradScaler runs; it yields one found-inf flag, not per-tensor statistics
  roofline  one torch.sum over a single flat buffer of the same number of bytes
"""
from __future__ import annotations

import importlib
import math
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported where it is used: the CLI loads this module at start-up
    import torch

from . import strictjson
from .bench.grid import check_device
from .gradscan import _native, scan_tensors, tensor_stats
from .harness.report import UsageError, check_output, version, write_atomic
from .info import collect


def gpt2_124m_shapes() -> list[tuple[int, ...]]:
    d, v, ctx, layers = 768, 50257, 1024, 12
    shapes: list[tuple[int, ...]] = [(v, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def llama_7b_shapes() -> list[tuple[int, ...]]:
    d, ff, v, layers = 4096, 11008, 32000, 32
    shapes: list[tuple[int, ...]] = [(v, d)]
    for _ in range(layers):
        shapes += [(d, d)] * 4 + [(ff, d), (ff, d), (d, ff), (d,), (d,)]
    return shapes + [(d,), (v, d)]


def many_small_shapes(count: int = 1000, size: int = 1024) -> list[tuple[int, ...]]:
    return [(size,)] * count


LISTS: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    "gpt2-124m": gpt2_124m_shapes,
    "llama-7b": llama_7b_shapes,
    "1000-small": many_small_shapes,
}


def make_tensors(shapes, dtype, device, seed: int = 0) -> list[torch.Tensor]:
    import torch
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for s in shapes:
        t = torch.empty(s, dtype=dtype, device=device)
        # randn on the device is fast; the generator only fixes the CPU case
        if t.device.type == "cpu":
            t.normal_(generator=g)
        else:
            t.normal_()
        out.append(t)
    return out


def loop_stats(tensors: list[torch.Tensor]) -> list[list[float]]:
    import torch
    rows = []
    for t in tensors:
        x = t.detach()
        a = x.abs()
        fin = torch.isfinite(x)
        f = torch.where(fin, a, torch.zeros((), dtype=a.dtype, device=a.device)).to(torch.float64)
        rows.append(torch.stack([torch.isnan(x).sum().double(), torch.isposinf(x).sum().double(),
                                 torch.isneginf(x).sum().double(), (x == 0).sum().double(),
                                 (f * f).sum(), f.max() if f.numel() else f.new_zeros(())]))
    return torch.stack(rows).tolist() if rows else []


def foreach_stats(tensors: list[torch.Tensor]) -> list[list[float]]:
    import torch
    out: list[list[float]] = [[] for _ in tensors]
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        group = [tensors[i] for i in idx]
        l2 = torch.stack(torch._foreach_norm(group, 2)).double()
        linf = torch.stack(torch._foreach_norm(group, math.inf)).double()
        l0 = torch.stack([torch.count_nonzero(t) for t in group]).double()
        host = torch.stack([l2, linf, l0], 1).tolist()  # the one sync
        for j, (i, (n2, ninf, n0)) in enumerate(zip(idx, host)):
            if math.isfinite(n2) and math.isfinite(ninf):
                out[i] = [0, 0, 0, group[j].numel() - n0, n2 * n2, ninf]
            else:  # rare: a non-finite value somewhere, so recount exactly
                out[i] = list(tensor_stats(group[j]))
    return out


def fused_stats(tensors: list[torch.Tensor]) -> list[list[float]]:
    return [[r.nan, r.posinf, r.neginf, r.zero, r.sumsq, r.absmax] for r in scan_tensors(tensors)]


def amp_check(tensors: list[torch.Tensor]) -> None:
    import torch
    found = torch.zeros((), device=tensors[0].device)
    inv = torch.ones((), device=tensors[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, inv)


def _time(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> dict:
    import torch
    for _ in range(warmup):
        fn()
    times, host = [], []
    cuda = device.type == "cuda"
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            h0 = time.perf_counter()
            start.record()
            fn()
            host.append(time.perf_counter() - h0)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    res = {"median_s": statistics.median(times), "min_s": min(times), "reps": reps}
    if host:
        res["host_median_s"] = statistics.median(host)
    return res


def bench_list(name: str, dtype: torch.dtype, device: torch.device, reps: int, log=None) -> dict:
    import torch
    shapes = LISTS[name]()
    tensors = make_tensors(shapes, dtype, device)
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    flat = torch.empty(nbytes // torch.tensor([], dtype=dtype).element_size(), dtype=dtype, device=device).normal_()
    methods: dict[str, Callable[[], object]] = {
        "fused": lambda: scan_tensors(tensors),
        "loop": lambda: loop_stats(tensors),
        "foreach": lambda: foreach_stats(tensors),
        "roofline": lambda: flat.sum().item() if device.type == "cpu" else flat.sum(),
    }
    if device.type == "cuda" and dtype in (torch.float32, torch.float16):
        methods["amp_check"] = lambda: amp_check(tensors)
    results = {}
    for m, fn in methods.items():
        r = _time(fn, device, reps if m != "loop" else max(1, reps // 2))
        if log:
            log(f"    {m:<9} {r['median_s'] * 1e3:9.2f} ms")
        r["gbps"] = nbytes / r["median_s"] / 1e9
        results[m] = r
    fused = results["fused"]["median_s"]
    ratios = {f"{m}_over_fused": results[m]["median_s"] / fused for m in results if m != "fused"}
    ratios["fused_gbps_over_roofline_gbps"] = results["fused"]["gbps"] / results["roofline"]["gbps"]
    # The comparison is only meaningful if every method computed the same thing: counts exactly,
    # sums of squares to the precision each method reaches (recorded).
    ref = loop_stats(tensors)
    agree = True
    for m, stats_fn in (("fused", fused_stats), ("foreach", foreach_stats)):
        got = stats_fn(tensors)
        agree &= all(a[:4] == b[:4] and abs(a[5] - b[5]) <= 1e-6 * abs(b[5]) for a, b in zip(got, ref))
        results[m]["sumsq_max_rel_err"] = max(abs(a[4] - b[4]) / max(abs(b[4]), 1e-30) for a, b in zip(got, ref))
    return {"list": name, "dtype": str(dtype).replace("torch.", ""), "device": str(device),
            "tensors": len(shapes), "elements": sum(math.prod(s) for s in shapes), "bytes": nbytes,
            "methods": results, "ratios": ratios, "outputs_agree": agree}


def run(lists: list[str], dtypes: list[str], device: str, reps: int, log=None) -> dict:
    import torch
    dev = torch.device(device)
    out: dict[str, Any] = {"machine_info": collect(), "benchmarks": []}
    total, n = len(lists) * len(dtypes), 0
    for name in lists:
        for dt in dtypes:
            n += 1
            if log:
                log(f"[{n}/{total}] {name} {dt} on {device} ...")
            dtype = getattr(torch, dt)
            try:
                out["benchmarks"].append(bench_list(name, dtype, dev, reps, log=log))
            except (RuntimeError, MemoryError) as exc:  # out of memory on a small machine: record, go on
                out["benchmarks"].append({"list": name, "dtype": dt, "device": device, "error": str(exc)[:500]})
    return out


def host_cost(counts=(291, 1000), reps: int = 300, scan_module=None) -> list[dict]:
    """The Python side of one scan for ``counts`` small CPU gradients: ``launch`` and ``finish`` (the
    per-step work around the kernel), the native scan alone (subtracted: "excluding the kernel"), and the
    tensor table's upkeep. Medians of ``reps`` calls. ``scan_module``: another ``gradscan._scan`` to time
    (an older version, for a before/after)."""
    import torch

    mod = scan_module or importlib.import_module("benchsuite.gradscan._scan")

    lows: dict[int, float] = {}

    def median_ms(fn, setup=None) -> float:
        """Median wall time of ``fn(setup())``, the setup untimed (the fastest is kept in ``lows``: on a
        loaded machine the median measures the other work too)."""
        for _ in range(20):
            fn(setup() if setup else None)
        times = []
        for _ in range(reps):
            arg = setup() if setup else None
            t0 = time.perf_counter()
            fn(arg)
            times.append(time.perf_counter() - t0)
        lows[len(lows)] = min(times) * 1e3
        return statistics.median(times) * 1e3

    out = []
    for n in counts:
        params = [torch.nn.Parameter(torch.zeros(64)) for _ in range(n)]
        grads = [torch.randn(64) for _ in params]
        for p, g in zip(params, grads):
            p.grad = g
        pairs = [(f"model.layers.{i // 7}.proj{i % 7}.lora_A.default.weight", p) for i, p in enumerate(params)]
        # The timed callables run here, within this iteration: its values are bound as defaults.
        launch = median_ms(lambda _, pairs=pairs: mod.launch(pairs))
        finish = median_ms(lambda pending: pending.finish(), setup=lambda pairs=pairs: mod.launch(pairs))
        cache = _native.TableCache()
        cache.update(grads)
        table = cache.table
        assert table is not None  # update() built it
        counts_t = torch.zeros((n, 4), dtype=torch.int64)
        stats_t = torch.zeros((n, 2), dtype=torch.float64)
        core = median_ms(lambda _, table=table, n=n, counts_t=counts_t, stats_t=stats_t: _native._core.scan_cpu(
            table.data_ptr(), n, counts_t.data_ptr(), stats_t.data_ptr(), 1))
        reuse = median_ms(lambda _, cache=cache, grads=grads: cache.update(grads))
        other = [g.clone() for g in grads]
        flip = [grads, other]

        def flipped(_, cache=cache, flip=flip) -> bool:
            flip.reverse()
            return cache.update(flip[0])

        rebuild = median_ms(flipped)
        out.append({"tensors": n, "launch_ms": round(launch, 4), "finish_ms": round(finish, 4),
                    "native_scan_ms": round(core, 4),
                    "python_per_scan_ms": round(launch + finish - core, 4),
                    "table_reused_ms": round(reuse, 4), "table_rebuilt_ms": round(rebuild, 4), "reps": reps,
                    "fastest_ms": dict(zip(["launch", "finish", "native_scan", "table_reused", "table_rebuilt"],
                                           [round(v, 4) for v in list(lows.values())[-5:]]))})
    return out


def render_host_cost(rows: list[dict]) -> str:
    lines = [f"{'tensors':>7} {'launch ms':>10} {'finish ms':>10} {'native ms':>10} {'python/scan ms':>15} "
             f"{'table kept ms':>14} {'table rebuilt ms':>17}"]
    for r in rows:
        lines.append(f"{r['tensors']:>7} {r['launch_ms']:>10.3f} {r['finish_ms']:>10.3f} {r['native_scan_ms']:>10.3f} "
                     f"{r['python_per_scan_ms']:>15.3f} {r['table_reused_ms']:>14.3f} {r['table_rebuilt_ms']:>17.3f}")
    return "\n".join(lines)


def render(result: dict) -> str:
    lines = [f"{'list':<11} {'dtype':<9} {'device':<6} {'fused GB/s':>10} {'loop/fused':>10} "
             f"{'foreach/fused':>13} {'amp/fused':>9} {'fused/roofline GB/s':>19} {'fused ms':>9} {'host us':>8}"]
    for b in result["benchmarks"]:
        if "error" in b:
            lines.append(f"{b['list']:<11} {b['dtype']:<9} {b['device']:<6} error: {b['error'][:80]}")
            continue
        r, m = b["ratios"], b["methods"]
        amp = f"{r['amp_check_over_fused']:.2f}x" if "amp_check_over_fused" in r else "-"
        host = f"{m['fused']['host_median_s'] * 1e6:.0f}" if "host_median_s" in m["fused"] else "-"
        lines.append(f"{b['list']:<11} {b['dtype']:<9} {b['device']:<6} {m['fused']['gbps']:>10.1f} "
                     f"{r['loop_over_fused']:>9.1f}x {r['foreach_over_fused']:>12.1f}x {amp:>9} "
                     f"{r['fused_gbps_over_roofline_gbps']:>18.0%} {m['fused']['median_s'] * 1e3:>9.2f} {host:>8}")
    return "\n".join(lines)


DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}


def main(*, device: str | None = None, lists: str | None = None, dtypes: str | None = None,
         json_path: str | None = None, reps: int = 10, host_cost_only: bool = False) -> int:
    import torch
    device = check_device(device)
    list_names = [x.strip() for x in lists.split(",") if x.strip()] if lists else (
        ["gpt2-124m", "llama-7b", "1000-small"] if device.startswith("cuda") else ["gpt2-124m", "1000-small"])
    unknown = [n for n in list_names if n not in LISTS]
    if unknown or not list_names:
        raise UsageError(f"--lists: unknown list {unknown[0] if unknown else '(none)'!r}; "
                         f"choose from {', '.join(LISTS)}")
    raw = [x.strip() for x in dtypes.split(",") if x.strip()] if dtypes else ["float32", "bfloat16"]
    bad = [d for d in raw if d.lower() not in DTYPES]
    if bad or not raw:
        raise UsageError(f"--dtypes: unknown dtype {bad[0] if bad else '(none)'!r}; choose from "
                         "float32 (fp32), bfloat16 (bf16), float16 (fp16)")
    dtype_names = list(dict.fromkeys(DTYPES[d.lower()] for d in raw))
    check_output(json_path, "--json")
    quiet = json_path == "-"
    if host_cost_only:
        rows = host_cost(reps=30 * reps)  # 300 calls at the default --reps 10
        result = {"benchsuite_version": version(), "kind": "scan-bench", "host_cost": rows,
                  "device": "cpu", "cpu_threads": torch.get_num_threads()}
        print(render_host_cost(rows), file=sys.stderr if quiet else sys.stdout)
    else:
        result = run(list_names, dtype_names, device, reps, log=lambda m: print(m, file=sys.stderr, flush=True))
        result = {"benchsuite_version": version(), "kind": "scan-bench", **result}
        print(render(result), file=sys.stderr if quiet else sys.stdout)
    if json_path:
        write_atomic(json_path, strictjson.dumps(result, indent=2))
        if not quiet:
            print(f"wrote {json_path}", file=sys.stderr)
    return 0
