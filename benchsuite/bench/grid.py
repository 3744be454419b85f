"""The grid: configurations expanded, each run in a fresh forked child, results compared."""
from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

KEYS = ("checkpointing", "accumulation", "precision", "adapter")
DEFAULT_GRID = {"checkpointing": ["off", "reentrant", "non-reentrant"], "accumulation": [1, 4],
                "precision": ["fp32", "fp16", "bf16"], "adapter": ["full", "lora"]}


def parse_grid(items: list[str]) -> dict:
    grid = {k: list(v) for k, v in DEFAULT_GRID.items()}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"benchsuite bench: --grid takes KEY=V1,V2, not {item!r}")
        key, values = item.split("=", 1)
        if key not in KEYS:
            raise SystemExit(f"benchsuite bench: unknown grid key {key!r}; keys: {', '.join(KEYS)}")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        grid[key] = [int(v) for v in vals] if key == "accumulation" else vals
    return grid


def expand(grid: dict) -> list[dict]:
    return [dict(zip(KEYS, combo)) for combo in itertools.product(*(grid[k] for k in KEYS))]


def label(c: dict) -> str:
    ck = {"off": "ckpt-off", "reentrant": "ckpt-re", "non-reentrant": "ckpt-nonre"}.get(c["checkpointing"], c["checkpointing"])
    return f"{ck}/acc{c['accumulation']}/{c['precision']}/{c['adapter']}"


def run_one(cfg: dict, timeout: float) -> dict:
    """Fork, run the configuration in the child, collect its result; failures are results too."""
    out = Path(cfg["workdir"]) / "result.json"
    pid = os.fork()
    if pid == 0:
        from ..harness.proc import die_with_parent
        die_with_parent()
        code = 0
        try:
            import torch
            torch.set_num_threads(cfg.get("threads") or os.cpu_count() or 1)
            from .worker import run
            res = {"status": "ok", **run(cfg)}
        except MemoryError as exc:
            res, code = {"status": "oom", "error": f"MemoryError: {exc}"}, 1
        except RuntimeError as exc:
            text = str(exc)
            oom = "out of memory" in text.lower() or "can't allocate memory" in text.lower()
            res, code = {"status": "oom" if oom else "error", "error": f"RuntimeError: {text[:1000]}"}, 1
        except BaseException as exc:
            res, code = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:1000]}",
                         "traceback": traceback.format_exc()[-2000:]}, 1
        try:
            out.write_text(json.dumps(res, default=str))
        finally:
            os._exit(code)
    t0 = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"status": "timeout", "error": f"no result after {timeout:.0f} s"}
        time.sleep(0.05)
    if out.exists():
        return json.loads(out.read_text())
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
    # SIGKILL with no result is what the kernel's out-of-memory killer does.
    return {"status": "oom" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9 else "crashed",
            "error": f"the configuration's process ended by {how} before reporting"}


def derive(results: list[dict]) -> None:
    """Memory saved and slowdown against the baseline; whether checkpointing took effect."""
    ok = [r for r in results if r.get("status") == "ok"]
    base = next((r for r in ok if (r["checkpointing"], r["accumulation"], r["precision"], r["adapter"])
                 == ("off", 1, "fp32", "full")), ok[0] if ok else None)
    for r in ok:
        if base:
            r["baseline"] = label(base)
            r["memory_saved_fraction"] = 1 - r["peak_memory_bytes"] / base["peak_memory_bytes"]
            r["slowdown"] = r["step_time_s"] / base["step_time_s"]
        r["estimate_error_fraction"] = r["estimated_peak_memory_bytes"] / max(1, r["peak_memory_bytes"]) - 1
        if r["checkpointing"] == "off":
            r["checkpointing_took_effect"] = None
            continue
        twin = next((o for o in ok if o["checkpointing"] == "off" and all(o[k] == r[k] for k in
                                                                            ("accumulation", "precision", "adapter"))), None)
        saved = twin is None or r["peak_memory_bytes"] < twin["peak_memory_bytes"]
        r["checkpointing_took_effect"] = bool(r["recompute_observed"] and saved)
        if not r["checkpointing_took_effect"]:
            why = [] if r["recompute_observed"] else ["no recompute seen in the backward"]
            if not saved:
                why.append("peak memory not below the same configuration without checkpointing")
            r["checkpointing_flag"] = "; ".join(why)


def markdown(results: list[dict], meta: dict) -> str:
    env = meta["environment"]
    lines = [f"# benchsuite bench: {meta['model']}, batch {meta['batch']} x {meta['seq_len']} tokens", "",
             f"Device {meta['device']}; torch {env.get('torch')}, transformers {env.get('transformers')}, "
             f"peft {env.get('peft')}. {meta['steps']} measured steps after {meta['warmup']} warm-up; memory: "
             f"{meta.get('memory_source', '')}.", "",
             "| configuration | status | peak MiB | estimate MiB | est. error | step s | tokens/s | memory saved | "
             "slowdown | checkpointing took effect | loss finite |" + (" scan overhead |" if meta.get("scan") else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if meta.get("scan") else "")]
    for r in results:
        if r.get("status") != "ok":
            lines.append(f"| {label(r)} | {r.get('status')}: {r.get('error', '')[:80]} |" + " |" * (9 + bool(meta.get("scan"))))
            continue
        ck = "-" if r["checkpointing_took_effect"] is None else ("yes" if r["checkpointing_took_effect"]
                                                                 else f"**no** ({r['checkpointing_flag']})")
        row = (f"| {label(r)} | ok | {r['peak_memory_bytes'] / 2**20:.0f} | {r['estimated_peak_memory_bytes'] / 2**20:.0f} | "
               f"{100 * r['estimate_error_fraction']:+.0f}% | {r['step_time_s']:.3f} | {r['tokens_per_s']:.0f} | "
               f"{100 * r.get('memory_saved_fraction', 0):.0f}% | {r.get('slowdown', 1):.2f}x | {ck} | "
               f"{'yes' if r['loss_finite'] else '**no**'} |")
        if meta.get("scan"):
            row += f" {100 * r.get('scan_overhead_fraction', 0):.2f}% ({1e3 * r.get('scan_seconds_per_step', 0):.2f} ms) |"
        lines.append(row)
    lines += ["", f"Baseline: {next((r.get('baseline') for r in results if r.get('baseline')), '-')}. "
                  "Memory saved and slowdown are against it."]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        return
    fig, ax = plt.subplots(figsize=(13, 7.5), dpi=120)
    colours = {"off": "#1f77b4", "reentrant": "#d62728", "non-reentrant": "#2ca02c"}
    markers = {"fp32": "o", "fp16": "s", "bf16": "^"}
    for r in ok:
        x, y = r["peak_memory_bytes"] / 2**20, r["tokens_per_s"]
        ax.scatter(x, y, c=colours.get(r["checkpointing"], "grey"), marker=markers.get(r["precision"], "o"),
                   s=70 if r["adapter"] == "full" else 35, edgecolors="black" if r["accumulation"] > 1 else "none",
                   zorder=3)
        ax.annotate(label(r), (x, y), fontsize=6.5, xytext=(4, 3), textcoords="offset points", alpha=0.85)
    # Pareto front: no other configuration uses less memory and is faster.
    pts = sorted(ok, key=lambda r: (r["peak_memory_bytes"], -r["tokens_per_s"]))
    front, best = [], -1.0
    for r in pts:
        if r["tokens_per_s"] > best:
            front.append(r)
            best = r["tokens_per_s"]
    ax.plot([r["peak_memory_bytes"] / 2**20 for r in front], [r["tokens_per_s"] for r in front], "--", c="black",
            lw=1.2, alpha=0.7, label="Pareto front (less memory, more throughput)", zorder=2)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], ls="--", c="black", label="Pareto front")]
    handles += [Line2D([], [], marker="o", ls="", c=c, label=f"checkpointing {k}") for k, c in colours.items()]
    handles += [Line2D([], [], marker=m, ls="", c="grey", label=k) for k, m in markers.items()]
    handles += [Line2D([], [], marker="o", ls="", c="white", markeredgecolor="black", label="accumulation > 1 (ringed)"),
                Line2D([], [], marker="o", ls="", c="grey", markersize=4, label="small marker: LoRA")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_xlabel("peak memory (MiB)")
    ys = [r["tokens_per_s"] for r in ok]
    if max(ys) > 10 * min(ys):  # e.g. fp16 without fast kernels on a CPU: keep every point readable
        ax.set_yscale("log")
    ax.set_ylabel("throughput (tokens/s)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args) -> int:
    from ..harness.report import write_atomic
    from ..harness.versions import environment
    grid = parse_grid(args.grid)
    configs = expand(grid)
    for name in ("torch", "transformers", "peft"):
        __import__(name)  # warm parent: each fork starts with the libraries imported
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    meta = {"model": args.model, "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps,
            "warmup": args.warmup, "device": device, "grid": grid, "scan": args.scan,
            "environment": environment(), "command": " ".join(["benchsuite"] + sys.argv[1:]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    results: list[dict] = []
    t_all = time.perf_counter()
    for i, c in enumerate(configs, 1):
        with tempfile.TemporaryDirectory(prefix="benchsuite-bench-") as work:
            cfg = {**c, "model": args.model, "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps,
                   "warmup": args.warmup, "device": device, "scan": args.scan, "workdir": work,
                   "max_memory_mb": args.max_memory_mb}
            t0 = time.perf_counter()
            res = {**c, **run_one(cfg, args.timeout)}
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        results.append(res)
        if res.get("status") == "ok":
            meta["memory_source"] = res["peak_memory_source"]
            print(f"[{i}/{len(configs)}] {label(c):<32} peak {res['peak_memory_bytes'] / 2**20:7.0f} MiB "
                  f"(est {res['estimated_peak_memory_bytes'] / 2**20:6.0f})  {res['step_time_s']:.3f} s/step  "
                  f"{res['tokens_per_s']:8.0f} tok/s", file=sys.stderr, flush=True)
        else:
            print(f"[{i}/{len(configs)}] {label(c):<32} {res['status']}: {res.get('error', '')[:120]}",
                  file=sys.stderr, flush=True)
        derive(results)
        if args.json:  # rewritten after every configuration: an interrupted grid keeps what finished
            write_atomic(args.json, json.dumps({**meta, "results": results}, indent=2, default=str))
    meta["duration_s"] = round(time.perf_counter() - t_all, 1)
    derive(results)
    md = markdown(results, meta)
    print(md)
    if args.json:
        write_atomic(args.json, json.dumps({**meta, "results": results}, indent=2, default=str))
    if args.markdown:
        write_atomic(args.markdown, md)
    if args.plot:
        try:
            plot(results, args.plot, f"{args.model}, batch {args.batch} x {args.seq_len}, {device}: "
                                     "peak memory vs throughput")
        except ImportError as exc:  # results are already written: say what is missing, keep them
            print(f"benchsuite bench: no plot ({exc}); pip install matplotlib", file=sys.stderr)
            return 2
    print(f"{len(configs)} configuration(s) in {meta['duration_s']:.0f} s", file=sys.stderr)
    return 0 if all(r.get("status") == "ok" for r in results) else 1
