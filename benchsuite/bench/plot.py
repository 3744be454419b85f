"""The bench plot: peak memory against throughput, one panel per adapter (full fine-tuning and LoRA are not
interchangeable choices), each with its own Pareto front, labels placed where they do not overlap, a
legend of only the series that ran and, with a memory budget, the configuration it recommends."""
from __future__ import annotations

from .configs import label
from .report import ADAPTERS, by_adapter, pareto_front, recommend, usable

COLOURS = {"off": "#1f77b4", "reentrant": "#d62728", "non-reentrant": "#2ca02c"}
MARKERS = {"fp32": "o", "fp16": "s", "bf16": "^"}
# Where a label may go around its point (offsets in points, horizontal and vertical alignment), nearest first.
SPOTS = [(7, 3, "left", "bottom"), (7, -3, "left", "top"), (-7, 3, "right", "bottom"), (-7, -3, "right", "top"),
         (0, 8, "center", "bottom"), (0, -8, "center", "top"), (14, 14, "left", "bottom"), (14, -14, "left", "top"),
         (-14, 14, "right", "bottom"), (-14, -14, "right", "top"), (0, 22, "center", "bottom"),
         (0, -22, "center", "top"), (30, 0, "left", "center"), (-30, 0, "right", "center"),
         (24, 28, "left", "bottom"), (24, -28, "left", "top"), (-24, 28, "right", "bottom"), (-24, -28, "right", "top"),
         (0, 38, "center", "bottom"), (0, -38, "center", "top"), (36, 44, "left", "bottom"),
         (-36, 44, "right", "bottom"), (36, -44, "left", "top"), (-36, -44, "right", "top"),
         (0, 56, "center", "bottom"), (0, -56, "center", "top")]


def short(r: dict) -> str:
    """The label within an adapter's panel (the panel names the adapter)."""
    return label(r).rsplit("/", 1)[0]


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _distance(box, x: float, y: float) -> float:
    return ((max(box.x0 - x, 0, x - box.x1)) ** 2 + (max(box.y0 - y, 0, y - box.y1)) ** 2) ** 0.5


def _place_labels(ax, rs: list[dict], texts: list[str], colours: list[str], bold: list[str]) -> None:
    """Each label at the first spot around its point where it overlaps no other label, no point and stays
    in the axes (the farther spots with a leader line to the point); where none is free, the least crowded."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pix = [ax.transData.transform((r["peak_memory_bytes"] / 2**20, r["tokens_per_s"])) for r in rs]
    half = [22 if b == "pick" else 8 for b in bold]  # the markers (the budget's pick is ringed)
    taken = [Bbox.from_bounds(x - h, y - h, 2 * h, 2 * h) for (x, y), h in zip(pix, half)]
    for i in sorted(range(len(rs)), key=lambda i: (not bold[i], pix[i][1])):
        best = None
        for dx, dy, ha, va in SPOTS:
            far = abs(dx) + abs(dy) > 20  # a leader line to its point
            ann = ax.annotate(texts[i], (rs[i]["peak_memory_bytes"] / 2**20, rs[i]["tokens_per_s"]), xytext=(dx, dy),
                              textcoords="offset points", ha=ha, va=va, fontsize=7.5, color=colours[i],
                              fontweight="bold" if bold[i] else "normal", zorder=5,
                              arrowprops={"arrowstyle": "-", "color": "0.35", "lw": 0.8, "shrinkA": 1, "shrinkB": 6}
                              if far else None)
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer)  # the text's own box, not its leader line's
            outside = box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1
            cost = sum(_overlap(box, t) for j, t in enumerate(taken) if j != i) + (1e6 if outside else 0)
            own = _distance(box, *pix[i])  # a label nearer another point than its own would name that one
            cost += 400 * sum(1 for j, q in enumerate(pix) if j != i and _distance(box, *q) < own + 4)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann)
            else:
                ann.remove()
            if cost == 0:
                break
        assert best is not None
        taken.append(Text.get_window_extent(best[1], renderer))


def _panel(ax, rs: list[dict], adapter: str, budget_gib: float | None) -> tuple[list[dict], list[str]]:
    ok = [r for r in rs if r.get("status") == "ok"]
    front = pareto_front(ok)
    pick = None
    if budget_gib:
        fits = [r for r in ok if usable(r) and r["peak_memory_bytes"] <= budget_gib * 2**30]
        pick = max(fits, key=lambda r: (r["tokens_per_s"], -r["peak_memory_bytes"]), default=None)
    for r in ok:
        x, y = r["peak_memory_bytes"] / 2**20, r["tokens_per_s"]
        ax.scatter(x, y, c=COLOURS.get(r["checkpointing"], "grey"), marker=MARKERS.get(r["precision"], "o"), s=60,
                   edgecolors="black" if r["accumulation"] > 1 else "none", linewidths=1.2, zorder=3)
        if not usable(r):  # an option that changes the gradients is a bug, not a saving: crossed out in red
            ax.scatter(x, y, marker="x", c="red", s=150, linewidths=2.2, zorder=4)
    if len(front) > 1:
        ax.plot([r["peak_memory_bytes"] / 2**20 for r in front], [r["tokens_per_s"] for r in front], "--", c="black",
                lw=1.1, alpha=0.6, zorder=2)
    if pick is not None:
        ax.scatter(pick["peak_memory_bytes"] / 2**20, pick["tokens_per_s"], s=420, facecolors="none",
                   edgecolors="#ff7f0e", linewidths=2.5, zorder=2)
    ys = [r["tokens_per_s"] for r in ok]
    if max(ys) > 10 * min(ys):  # e.g. fp16 without fast kernels on a CPU: keep every point readable
        ax.set_yscale("log")
    ax.margins(x=0.18, y=0.14)
    ax.set_title(f"{ADAPTERS.get(adapter, adapter)} ({len(ok)} configurations)", fontsize=10)
    ax.set_xlabel("peak memory (MiB)")
    ax.set_ylabel("throughput (tokens/s)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.grid(alpha=0.3)
    if budget_gib:
        _budget_line(ax, budget_gib * 1024, [r["peak_memory_bytes"] / 2**20 for r in ok])
    return ok, ["pick" if r is pick else "front" if r in front else "" for r in ok]


def _budget_line(ax, budget_mib: float, xs: list[float]) -> None:
    """The budget as a dotted line where it is near the points; far from them (a 80 GiB budget for a tiny
    model), an arrow at the panel's edge, so that the points keep the panel's width."""
    lo, hi = min(xs), max(xs)
    style = {"fontsize": 8, "color": "#ff7f0e", "xycoords": "axes fraction", "va": "bottom"}
    if budget_mib > hi + max(hi - lo, 0.6 * hi):
        ax.annotate(f"budget {budget_mib / 1024:g} GiB →", (0.99, 0.02), ha="right", **style)
    elif budget_mib < lo - max(hi - lo, 0.4 * lo):
        ax.annotate(f"← budget {budget_mib / 1024:g} GiB", (0.01, 0.02), ha="left", **style)
    else:
        ax.axvline(budget_mib, ls=":", c="#ff7f0e", lw=1.5, zorder=1)


def _labels(ax, ok: list[dict], bold: list[str]) -> None:
    texts = [short(r) + ("" if usable(r) else "  GRADIENTS CHANGED") for r in ok]
    colours = ["black" if usable(r) else "red" for r in ok]
    _place_labels(ax, ok, texts, colours, bold)


def _legend(fig, ok: list[dict], budget_gib: float | None) -> int:
    """A legend of the series that ran, above the panels; returns its rows."""
    from matplotlib.lines import Line2D
    ran = {k: {r[k] for r in ok} for k in ("checkpointing", "precision")}
    handles = [Line2D([], [], marker="o", ls="", c=c, label=f"checkpointing {k}")
               for k, c in COLOURS.items() if k in ran["checkpointing"]]
    handles += [Line2D([], [], marker=m, ls="", c="grey", label=k) for k, m in MARKERS.items() if k in ran["precision"]]
    if any(r["accumulation"] > 1 for r in ok):
        acc = sorted({r["accumulation"] for r in ok if r["accumulation"] > 1})
        handles.append(Line2D([], [], marker="o", ls="", c="white", markeredgecolor="black",
                              label=f"accumulation {', '.join(map(str, acc))} (ringed)"))
    if any(len(pareto_front(rs)) > 1 for rs in by_adapter(ok).values()):
        handles.append(Line2D([], [], ls="--", c="black", label="Pareto front (bold labels)"))
    if any(not usable(r) for r in ok):
        handles.append(Line2D([], [], marker="x", ls="", c="red", markersize=9,
                              label="gradients changed: not a choice"))
    if budget_gib:
        handles.append(Line2D([], [], marker="o", ls=":", c="#ff7f0e", markerfacecolor="none", markersize=11,
                              label=f"budget {budget_gib:g} GiB, its pick"))
    ncol = min(len(handles), 3 if len(by_adapter(ok)) == 1 else 5)
    fig.legend(handles=handles, fontsize=8, loc="upper center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.955))
    return -(-len(handles) // ncol)


def figure(results: list[dict], title: str, budget_gib: float | None = None):
    """The figure (matplotlib, Agg), or None when no configuration ran."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        return None
    panels = by_adapter(ok)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(9.0, 7.5 * len(panels)), 7.2), dpi=120, squeeze=False)
    lines = recommend(ok, budget_gib) if budget_gib else ["pass --budget GIB for the fastest configuration "
                                                          "that fits in GIB"]
    fig.suptitle(title, fontsize=11, y=0.99)
    rows = _legend(fig, ok, budget_gib)
    fig.text(0.5, 0.012, "\n".join(lines), ha="center", va="bottom", fontsize=9,
             color="#b35900" if budget_gib else "dimgrey")
    drawn = [_panel(ax, rs, adapter, budget_gib) for ax, (adapter, rs) in zip(axes[0], panels.items())]
    fig.tight_layout(rect=(0, 0.025 + 0.022 * len(lines), 1, 0.945 - 0.032 * rows))
    fig.canvas.draw()  # the layout is final: labels are placed in its pixels
    for ax, (rs, bold) in zip(axes[0], drawn):
        _labels(ax, rs, bold)
    return fig


def plot(results: list[dict], path: str, title: str, budget_gib: float | None = None) -> None:
    fig = figure(results, title, budget_gib)
    if fig is not None:
        import matplotlib.pyplot as plt
        fig.savefig(path)
        plt.close(fig)
