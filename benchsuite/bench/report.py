"""What a bench grid's results say: derived fields (memory saved, whether checkpointing took effect, whether
the gradients kept their baseline's), the choices (each adapter's Pareto front, the fastest configuration
that fits a memory budget) and the Markdown table."""
from __future__ import annotations

from ..gradscan.compare import TOLERANCES, compare_signatures
from ..gradscan.signature import Signature
from .configs import gradient_baseline, label

ADAPTERS = {"full": "full fine-tuning", "lora": "LoRA"}


def compare_to_baseline(results: list[dict], signatures: dict) -> None:
    """Each configuration's first-step gradients against its gradient baseline's (from their signatures):
    ``gradients`` (and, for accumulation > 1, ``gradients_per_micro_batch_mean``: what normalising each
    micro-batch's mean instead of the whole effective batch would have given)."""
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
        twin = next((o for o in ok if o["checkpointing"] == "off"
                     and all(o[k] == r[k] for k in ("accumulation", "precision", "adapter"))), None)
        saved = twin is None or r["peak_memory_bytes"] < twin["peak_memory_bytes"]
        r["checkpointing_took_effect"] = bool(r["recompute_observed"] and saved)
        if not r["checkpointing_took_effect"]:
            why = [] if r["recompute_observed"] else ["no recompute seen in the backward"]
            if not saved:
                why.append("peak memory not below the same configuration without checkpointing")
            r["checkpointing_flag"] = "; ".join(why)


def usable(r: dict) -> bool:
    """A configuration one can choose: it ran, its loss stayed finite and it kept its baseline's gradients
    (one that changes them is a bug, not a saving)."""
    return (r.get("status") == "ok" and bool(r.get("loss_finite", True))
            and (r.get("gradients") or {}).get("matches") is not False)


def pareto_front(results: list[dict]) -> list[dict]:
    """The usable configurations no other beats on both peak memory and throughput, least memory first."""
    pts = sorted((r for r in results if usable(r)), key=lambda r: (r["peak_memory_bytes"], -r["tokens_per_s"]))
    front: list[dict] = []
    for r in pts:
        if not front or r["tokens_per_s"] > front[-1]["tokens_per_s"]:
            front.append(r)
    return front


def by_adapter(results: list[dict]) -> dict[str, list[dict]]:
    """The results of each adapter that ran (full fine-tuning and LoRA are not interchangeable choices)."""
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r["adapter"], []).append(r)
    return {a: out[a] for a in sorted(out, key=lambda a: list(ADAPTERS).index(a) if a in ADAPTERS else 9)}


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def recommend(results: list[dict], budget_gib: float) -> list[str]:
    """One line per adapter: the fastest usable configuration whose measured peak fits in the budget."""
    budget = budget_gib * 2**30
    lines = []
    for adapter, rs in by_adapter(results).items():
        ok = [r for r in rs if usable(r)]
        if not ok:
            continue
        name = ADAPTERS.get(adapter, adapter)
        fits = [r for r in ok if r["peak_memory_bytes"] <= budget]
        if fits:
            best = max(fits, key=lambda r: (r["tokens_per_s"], -r["peak_memory_bytes"]))
            lines.append(f"fits in {budget_gib:g} GiB, {name}: {label(best)} ({_mib(best['peak_memory_bytes'])} peak, "
                         f"{best['tokens_per_s']:.0f} tokens/s; fastest of {len(fits)} that fit)")
        else:
            least = min(ok, key=lambda r: r["peak_memory_bytes"])
            lines.append(f"nothing fits in {budget_gib:g} GiB, {name}: the least memory measured is {label(least)} "
                         f"({_mib(least['peak_memory_bytes'])} peak)")
    return lines


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


def _row(r: dict, scan: bool) -> str:
    if r.get("status") != "ok":
        return f"| {label(r)} | {r.get('status')}: {r.get('error', '')[:80]} |" + " |" * (10 + scan)
    ck = "-" if r["checkpointing_took_effect"] is None else ("yes" if r["checkpointing_took_effect"]
                                                             else f"**no** ({r['checkpointing_flag']})")
    row = (f"| {label(r)} | ok | {r['peak_memory_bytes'] / 2**20:.0f} | "
           f"{r['estimated_peak_memory_bytes'] / 2**20:.0f} | "
           f"{100 * r['estimate_error_fraction']:+.0f}% | {r['step_time_s']:.3f} "
           f"(±{50 * r.get('step_time_spread_fraction', 0):.0f}%) | {r['tokens_per_s']:.0f} | "
           f"{100 * r.get('memory_saved_fraction', 0):.0f}% | {r.get('slowdown', 1):.2f}x | {ck} | "
           f"{'yes' if r['loss_finite'] else '**no**'} | {gradient_cell(r.get('gradients'))} |")
    if scan:
        row += f" {100 * r.get('scan_overhead_fraction', 0):.2f}% ({1e3 * r.get('scan_seconds_per_step', 0):.2f} ms) |"
    return row


def choices(results: list[dict], budget_gib: float | None = None) -> list[str]:
    """The lines that help a person choose: with a budget, what fits; each adapter's Pareto front."""
    out = [f"**{line[0].upper()}{line[1:]}.**" for line in recommend(results, budget_gib)] if budget_gib else []
    for adapter, rs in by_adapter(results).items():
        front = pareto_front(rs)
        if front:
            out.append(f"Choices for {ADAPTERS.get(adapter, adapter)} (none of the others uses less memory and is "
                       "faster; least memory first): "
                       + "; ".join(f"{label(r)} {_mib(r['peak_memory_bytes'])}, {r['tokens_per_s']:.0f} tok/s"
                                   for r in front) + ".")
    if out and not budget_gib:
        out.append("`--budget GIB` names the fastest of them that fits in GIB.")
    return out


def markdown(results: list[dict], meta: dict) -> str:
    env = meta["environment"]
    scan = bool(meta.get("scan"))
    lines = [f"# benchsuite bench: {meta['model']}, batch {meta['batch']} x {meta['seq_len']} tokens", "",
             f"Device {meta['device']}; torch {env.get('torch')}, transformers {env.get('transformers')}, "
             f"peft {env.get('peft')}. {meta['steps']} measured steps after {meta['warmup']} warm-up "
             f"(step time: median, "
             f"± half the min-max range); memory: "
             f"{meta.get('memory_source', '')}.", ""]
    pick = choices(results, meta.get("budget_gib"))
    if pick:
        lines += [p for line in pick for p in (line, "")]
    lines += ["| configuration | status | peak MiB | estimate MiB | est. error | step s (spread) | tokens/s | "
              "memory saved | slowdown | checkpointing took effect | loss finite | gradients vs baseline |"
              + (" scan overhead |" if scan else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if scan else "")]
    lines += [_row(r, scan) for r in results]
    lines += ["", f"Baseline: {next((r.get('baseline') for r in results if r.get('baseline')), '-')}. "
                  "Memory saved and slowdown are against it."]
    lines += gradient_notes(results)
    return "\n".join(lines) + "\n"


def gradient_notes(results: list[dict]) -> list[str]:
    """What the gradient comparison found. A table only of configurations whose gradients changed; the
    per-micro-batch-mean check (a normalisation this grid does not train with) is one sentence."""
    ok = [r for r in results if r.get("status") == "ok" and r.get("gradients")]
    if not ok:
        return []
    changed = [r for r in ok if r["gradients"].get("matches") is False]
    out = ["", "Gradients: each configuration's gradients at its first optimizer step (same initial weights, same "
               "batch, same seed), parameter by parameter, against the configuration with checkpointing off, "
               "accumulation 1 and fp32 of the same adapter; accumulation normalises the loss over the whole "
               "effective batch (each micro-batch's mean times its share of the labelled tokens). \"match\": "
               "every parameter's relative error ||g - g_base|| / ||g_base|| is within the precision's bound ("
               + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items())
               + ") and no parameter has a gradient on one side only; figures are the worst parameter's, "
                 "estimated from 128-number signatures (about 6% relative error on the relative error).", ""]
    if changed:
        out += [f"**{len(changed)} of {len(ok)} configurations change the gradients:**", "",
                "| configuration | gradients vs baseline |", "|---|---|"]
        out += [f"| {label(r)} | {gradient_cell(r['gradients'])} |" for r in changed]
    else:
        out.append(f"All {len(ok)} configurations keep the baseline's gradients.")
    mm = [r for r in ok if r.get("gradients_per_micro_batch_mean")]
    if mm:
        flagged = [r["gradients_per_micro_batch_mean"] for r in mm
                   if r["gradients_per_micro_batch_mean"].get("matches") is False]
        worst = max((g["max_rel_error"] for g in flagged if g.get("max_rel_error") is not None), default=None)
        out += ["", f"The check behind the accumulation rows: had accumulation averaged each micro-batch's mean "
                    f"loss instead (transformers < 4.46; this batch's sequences have unequal numbers of labelled "
                    f"tokens), {len(flagged)} of the {len(mm)} accumulation configurations would have been "
                    f"flagged" + (f" (relative error up to {_sci(worst)})" if worst is not None else "")
                    + ". Not a result of this grid: it shows the comparison catches that failure here "
                      "(each result's `gradients_per_micro_batch_mean`)."]
    return out
