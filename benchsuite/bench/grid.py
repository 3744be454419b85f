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

from .. import strictjson

KEYS = ("checkpointing", "accumulation", "precision", "adapter")
DEFAULT_GRID = {"checkpointing": ["off", "reentrant", "non-reentrant"], "accumulation": [1, 4],
                "precision": ["fp32", "fp16", "bf16"], "adapter": ["full", "lora"]}
# On a CPU, fp16 has no fast kernels (a step is 20-30x slower than fp32 or bf16): it is measured when
# asked for (--grid precision=fp16), not by default.
CPU_DEFAULT_PRECISION = ["fp32", "bf16"]
CHOICES = {"checkpointing": ("off", "reentrant", "non-reentrant"), "precision": ("fp32", "fp16", "bf16"),
           "adapter": ("full", "lora")}


def parse_grid(items: list[str], device: str = "cuda", batch: int | None = None) -> dict:
    """The grid from --grid KEY=V1,V2 items over the defaults; UsageError for anything it cannot run."""
    from ..harness.report import UsageError
    grid = {k: list(v) for k, v in DEFAULT_GRID.items()}
    if not str(device).startswith("cuda"):
        grid["precision"] = list(CPU_DEFAULT_PRECISION)
    for item in items:
        if "=" not in item:
            raise UsageError(f"--grid takes KEY=V1,V2, not {item!r}; keys: {', '.join(KEYS)}")
        key, values = (x.strip() for x in item.split("=", 1))
        if key not in KEYS:
            raise UsageError(f"--grid {item}: unknown key {key!r}; keys: {', '.join(KEYS)}")
        vals = list(dict.fromkeys(v.strip() for v in values.split(",") if v.strip()))
        if not vals:
            raise UsageError(f"--grid {item}: no value given")
        if key == "accumulation":
            bad = [v for v in vals if not v.isdigit() or int(v) < 1]
            if bad:
                raise UsageError(f"--grid {item}: accumulation takes whole numbers of at least 1, not {bad[0]!r}")
            vals = [int(v) for v in vals]
            if batch is not None:
                odd = [v for v in vals if batch % v]
                if odd:
                    raise UsageError(f"--grid {item}: --batch {batch} cannot be split into {odd[0]} equal micro-batches")
        else:
            bad = [v for v in vals if v not in CHOICES[key]]
            if bad:
                raise UsageError(f"--grid {item}: unknown {key} {bad[0]!r}; choose from {', '.join(CHOICES[key])}")
        grid[key] = vals
    return grid


def expand(grid: dict) -> list[dict]:
    return [dict(zip(KEYS, combo)) for combo in itertools.product(*(grid[k] for k in KEYS))]


def gradient_baseline(c: dict) -> dict:
    """The configuration whose gradients c's are compared with: same model and adapter, checkpointing off,
    accumulation 1, fp32."""
    return {"checkpointing": "off", "accumulation": 1, "precision": "fp32", "adapter": c["adapter"]}


def with_baselines(configs: list[dict]) -> list[dict]:
    """The configurations with each one's gradient baseline added (first) where the grid lacks it."""
    have = {label(c) for c in configs}
    added = []
    for c in configs:
        b = gradient_baseline(c)
        if label(b) not in have:
            have.add(label(b))
            added.append({**b, "added_as": "gradient baseline"})
    return added + configs


def label(c: dict) -> str:
    ck = {"off": "ckpt-off", "reentrant": "ckpt-re", "non-reentrant": "ckpt-nonre"}.get(c["checkpointing"], c["checkpointing"])
    return f"{ck}/acc{c['accumulation']}/{c['precision']}/{c['adapter']}"


def run_one(cfg: dict, timeout: float) -> dict:
    """Fork, run the configuration in the child, collect its result; failures are results too."""
    out = Path(cfg["workdir"]) / "result.json"
    pid = os.fork()
    log = Path(cfg["workdir"]) / "output.log"
    if pid == 0:
        from ..harness.proc import die_with_parent
        die_with_parent()
        # Ctrl-C is the parent's to handle (it stops the grid and kills this process): an interrupted
        # configuration is never recorded as a result of its own.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The libraries' warnings and log lines go to a file, kept in the result, not to the console.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
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
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"status": "timeout", "error": f"no result after {timeout:.0f} s"}
            time.sleep(0.05)
    except BaseException:  # Ctrl-C: the configuration in progress is dropped, its process with it
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    text = log.read_text(errors="replace").strip() if log.exists() else ""
    if out.exists():
        res = json.loads(out.read_text())
        if text:
            res["log"] = text[-4000:]
        return res
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
    # SIGKILL with no result is what the kernel's out-of-memory killer does.
    return {"status": "oom" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9 else "crashed",
            "error": f"the configuration's process ended by {how} before reporting", "log": text[-4000:]}


def compare_to_baseline(results: list[dict], signatures: dict) -> None:
    """Each configuration's first-step gradients against its gradient baseline's (from their signatures):
    ``gradients`` (and, for accumulation > 1, ``gradients_per_micro_batch_mean``: what normalising each
    micro-batch's mean instead of the whole effective batch would have given)."""
    from ..gradscan.compare import TOLERANCES, compare_signatures
    from ..gradscan.signature import Signature
    for r in results:
        if r.get("status") != "ok":
            continue
        base_label = label(gradient_baseline(r))
        base = signatures.get(base_label, {}).get("gradient_signature")
        if base is None:
            r["gradients"] = {"baseline": base_label, "matches": None,
                              "note": "baseline not measured (failed or not finished)"}
            continue
        rtol = TOLERANCES[r["precision"]]
        mine = signatures.get(label(r), {})
        for key, field in (("gradient_signature", "gradients"),
                           ("gradient_signature_micro_mean", "gradients_per_micro_batch_mean")):
            if key not in mine:
                continue
            rep = compare_signatures({n: Signature.from_dict(d) for n, d in base.items()},
                                     {n: Signature.from_dict(d) for n, d in mine[key].items()}, rtol=rtol)
            d = rep.to_dict(baseline=base_label, records=False)
            d["estimated_from"] = "signatures (K=128 count sketch; see benchsuite.gradscan.signature)"
            r[field] = d


def derive(results: list[dict], signatures: dict | None = None) -> None:
    """Memory saved and slowdown against the baseline; whether checkpointing took effect; with the
    configurations' gradient signatures, whether each one kept the baseline's gradients."""
    if signatures is not None:
        compare_to_baseline(results, signatures)
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
             f"peft {env.get('peft')}. {meta['steps']} measured steps after {meta['warmup']} warm-up (step time: median, "
             f"± half the min-max range); memory: "
             f"{meta.get('memory_source', '')}.", "",
             "| configuration | status | peak MiB | estimate MiB | est. error | step s (spread) | tokens/s | memory saved | "
             "slowdown | checkpointing took effect | loss finite | gradients vs baseline |"
             + (" scan overhead |" if meta.get("scan") else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if meta.get("scan") else "")]
    for r in results:
        if r.get("status") != "ok":
            lines.append(f"| {label(r)} | {r.get('status')}: {r.get('error', '')[:80]} |" + " |" * (10 + bool(meta.get("scan"))))
            continue
        ck = "-" if r["checkpointing_took_effect"] is None else ("yes" if r["checkpointing_took_effect"]
                                                                 else f"**no** ({r['checkpointing_flag']})")
        row = (f"| {label(r)} | ok | {r['peak_memory_bytes'] / 2**20:.0f} | {r['estimated_peak_memory_bytes'] / 2**20:.0f} | "
               f"{100 * r['estimate_error_fraction']:+.0f}% | {r['step_time_s']:.3f} "
               f"(±{50 * r.get('step_time_spread_fraction', 0):.0f}%) | {r['tokens_per_s']:.0f} | "
               f"{100 * r.get('memory_saved_fraction', 0):.0f}% | {r.get('slowdown', 1):.2f}x | {ck} | "
               f"{'yes' if r['loss_finite'] else '**no**'} | {gradient_cell(r.get('gradients'))} |")
        if meta.get("scan"):
            row += f" {100 * r.get('scan_overhead_fraction', 0):.2f}% ({1e3 * r.get('scan_seconds_per_step', 0):.2f} ms) |"
        lines.append(row)
    lines += ["", f"Baseline: {next((r.get('baseline') for r in results if r.get('baseline')), '-')}. "
                  "Memory saved and slowdown are against it."]
    lines += gradient_notes(results)
    return "\n".join(lines) + "\n"


def gradient_cell(g: dict | None) -> str:
    """The table's gradient column: match or CHANGED, with the figures."""
    if not g:
        return "-"
    if g.get("matches") is None:
        return g.get("note", "-")
    figs = f"rel. error {_sci(g['max_rel_error'])}, cos {_cos(g['min_cosine'])}"
    if g["matches"]:
        return f"match ({figs})"
    why = f"{len(g['no_grad_mismatch'])} without gradient on one side; " if g["no_grad_mismatch"] else ""
    return f"**CHANGED** ({why}{figs}; worst {g['worst']})"


def _sci(x) -> str:
    return "-" if x is None else ("inf" if x == float("inf") else f"{x:.1e}")


def _cos(x) -> str:
    if x is None:
        return "-"
    return "1" if x == 1.0 else (f"{x:.6f}" if x > 0.9999 else f"{x:.4f}")


def gradient_notes(results: list[dict]) -> list[str]:
    from ..gradscan.compare import TOLERANCES
    ok = [r for r in results if r.get("status") == "ok" and r.get("gradients")]
    if not ok:
        return []
    changed = [label(r) for r in ok if r["gradients"].get("matches") is False]
    out = ["", "Gradients: each configuration's gradients at its first optimizer step (same initial weights, same "
               "batch, same seed), parameter by parameter, against the configuration with checkpointing off, "
               "accumulation 1 and fp32 of the same adapter; accumulation normalises the loss over the whole "
               "effective batch (each micro-batch's mean times its share of the labelled tokens). \"match\": "
               "every parameter's relative error ||g - g_base|| / ||g_base|| is within the precision's bound ("
               + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items())
               + ") and no parameter has a gradient on one side only; figures are the worst parameter's, "
                 "estimated from 128-number signatures (about 6% relative error on the relative error).",
           "", ("**Configurations that change the gradients: " + ", ".join(changed) + ".**") if changed
           else f"All {len(ok)} configurations keep the baseline's gradients."]
    mm = [r for r in ok if r.get("gradients_per_micro_batch_mean")]
    if mm:
        out += ["", "Had accumulation averaged each micro-batch's mean loss instead (transformers < 4.46; these "
                    "sequences have unequal numbers of labelled tokens):", "",
                "| configuration | per-micro-batch-mean gradients vs baseline |", "|---|---|"]
        out += [f"| {label(r)} | {gradient_cell(r['gradients_per_micro_batch_mean'])} |" for r in mm]
    return out


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
        changed = (r.get("gradients") or {}).get("matches") is False
        if changed:  # an option that changes the gradients is a bug, not a saving: crossed out in red
            ax.scatter(x, y, marker="x", c="red", s=160, linewidths=2.2, zorder=4)
        ax.annotate(label(r) + ("  GRADIENTS CHANGED" if changed else ""), (x, y), fontsize=6.5, xytext=(4, 3),
                    textcoords="offset points", alpha=0.85, color="red" if changed else "black")
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
                Line2D([], [], marker="o", ls="", c="grey", markersize=4, label="small marker: LoRA"),
                Line2D([], [], marker="x", ls="", c="red", markersize=9, label="gradients changed vs baseline")]
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


def check_device(device: str | None, option: str = "--device") -> str:
    """cpu or cuda[:N] that this machine has; UsageError otherwise."""
    import torch

    from ..harness.report import UsageError
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} {device!r}: not a device (cpu or cuda[:N])") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {device}: no CUDA device is visible to torch on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{option} {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise UsageError(f"{option} {device!r}: only cpu and cuda are measured")
    return str(dev)


def main(args) -> int:
    from ..harness.discover import check_model_path
    from ..harness.report import check_output
    from .worker import MODELS
    device = check_device(args.device)
    grid = parse_grid(args.grid, device, args.batch)
    model = args.model if args.model in MODELS else check_model_path(args.model)
    for opt, path in (("--json", args.json), ("--markdown", args.markdown), ("--plot", args.plot)):
        check_output(path, opt)
    if args.plot == "-":
        from ..harness.report import UsageError
        raise UsageError("--plot needs a file name (a PNG cannot go to stdout)")
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (found now, not after the grid)
        except ImportError as exc:
            from ..harness.report import UsageError
            raise UsageError(f"--plot needs matplotlib ({exc}); pip install matplotlib") from None
    configs = with_baselines(expand(grid))
    root = tempfile.mkdtemp(prefix="benchsuite-bench-")
    try:
        # torch's compile cache folder (made empty at import) goes with the rest; removed at the end.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(root, "torchinductor"))
        return _run_grid(args, grid, configs, model, device, root)
    finally:
        import shutil
        shutil.rmtree(root, ignore_errors=True)


def _run_grid(args, grid: dict, configs: list[dict], model: str, device: str, root: str) -> int:
    from ..harness.report import version, write_atomic
    from ..harness.versions import environment
    for name in ("torch", "transformers", "peft"):
        __import__(name)  # warm parent: each fork starts with the libraries imported
    meta = {"benchsuite_version": version(), "kind": "bench", "model": args.model, "batch": args.batch,
            "seq_len": args.seq_len, "steps": args.steps, "warmup": args.warmup, "device": device, "grid": grid,
            "scan": args.scan, "environment": environment(), "command": " ".join(["benchsuite"] + sys.argv[1:]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    quiet = "-" in (args.json, args.markdown)
    results: list[dict] = []
    signatures: dict[str, dict] = {}
    t_all = time.perf_counter()
    interrupted = False
    try:
        for i, c in enumerate(configs, 1):
            with tempfile.TemporaryDirectory(prefix=f"config{i}-", dir=root) as work:
                cfg = {**c, "model": model, "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps,
                       "warmup": args.warmup, "device": device, "scan": args.scan, "workdir": work,
                       "max_memory_mb": args.max_memory_mb}
                t0 = time.perf_counter()
                res = {**c, **run_one(cfg, args.timeout)}
            # Signatures are compared here, then kept out of the results (128 numbers per parameter).
            signatures[label(c)] = {k: res.pop(k) for k in ("gradient_signature", "gradient_signature_micro_mean")
                                    if k in res}
            res["wall_s"] = round(time.perf_counter() - t0, 2)
            results.append(res)
            if res.get("status") == "ok":
                meta["memory_source"] = res["peak_memory_source"]
                print(f"[{i}/{len(configs)}] {label(c):<32} peak {res['peak_memory_bytes'] / 2**20:7.0f} MiB "
                      f"(est {res['estimated_peak_memory_bytes'] / 2**20:6.0f})  {res['step_time_s']:.3f} s/step "
                      f"(spread {100 * res.get('step_time_spread_fraction', 0):.0f}%)  "
                      f"{res['tokens_per_s']:8.0f} tok/s", file=sys.stderr, flush=True)
            else:
                print(f"[{i}/{len(configs)}] {label(c):<32} {res['status']}: {res.get('error', '')[:120]}",
                      file=sys.stderr, flush=True)
            derive(results, signatures)
            if args.json and args.json != "-":  # rewritten after every configuration: an interrupted grid keeps what finished
                write_atomic(args.json, strictjson.dumps({**meta, "results": results}, indent=2, default=str))
    except KeyboardInterrupt:
        interrupted = True
        meta["interrupted"] = True
        print(f"\ninterrupted: {len(results)} of {len(configs)} configuration(s) finished; writing their results",
              file=sys.stderr)
    meta["duration_s"] = round(time.perf_counter() - t_all, 1)
    derive(results, signatures)
    md = markdown(results, meta)
    print(md, file=sys.stderr if quiet else sys.stdout)
    if args.json:
        write_atomic(args.json, strictjson.dumps({**meta, "results": results}, indent=2, default=str))
    if args.markdown:
        write_atomic(args.markdown, md)
    if args.plot:
        try:
            plot(results, args.plot, f"{args.model}, batch {args.batch} x {args.seq_len}, {device}: "
                                     "peak memory vs throughput")
        except Exception as exc:  # results are already written: say why, keep them
            print(f"benchsuite bench: no plot ({type(exc).__name__}: {exc})", file=sys.stderr)
            return 1
    logged = sum(1 for r in results if r.get("log"))
    if logged:
        print(f"library warnings/log lines of {logged} configuration(s) are kept in "
              + ("the JSON (field 'log')" if args.json else "each result's 'log' field (use --json PATH)"),
              file=sys.stderr)
    print(f"{len(results)} of {len(configs)} configuration(s) in {meta['duration_s']:.0f} s", file=sys.stderr)
    if interrupted:
        return 130
    return 0 if all(r.get("status") == "ok" for r in results) else 1
