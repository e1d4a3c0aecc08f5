"""Plots people would rather see than read (PNG via matplotlib, no display needed)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def accuracy_vs_macs(rows, path, title="Accuracy against compute"):
    """Scatter of top-1 accuracy (%) against MMACs, one labelled point per row.

    Args:
        rows: iterable of dicts with "model", "top1" (fraction) and "macs".
        path: PNG file to write.
    """
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for row in rows:
        x, y = row["macs"] / 1e6, 100 * row["top1"]
        ax.scatter(x, y, s=60, marker="o" if row["model"].startswith("bl_") else "s")
        ax.annotate(row["model"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    xs = [r["macs"] / 1e6 for r in rows]
    ys = [100 * r["top1"] for r in rows]
    ax.set_xlim(0, max(xs) * 1.25)
    ax.set_ylim(max(0.0, min(ys) - 5), min(100.5, max(ys) + 2))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def mixing_heatmap(weights, path, beta=None, title="Mixing weights softmax(alpha)"):
    """Fig. 3 of seed 002: a layers x levels heat map of mixing weights (values written in),
    and beta (the learned-depth weights of layers 2..L-1) as a bar panel when given.

    Args:
        weights: array [layers, levels] of softmax(alpha) (zero where a level is pruned).
        path: PNG file to write.
        beta: optional array of softmax(beta).
    """
    import numpy as np

    weights = np.asarray(weights, dtype=float)
    layers_, levels = weights.shape
    panels = 2 if beta is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(2.2 + 0.9 * levels + 3 * (panels - 1),
                                                 1.2 + 0.4 * layers_), dpi=120, squeeze=False)
    ax = axes[0][0]
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(layers_):
        for j in range(levels):
            ax.text(j, i, f"{weights[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if weights[i, j] < 0.6 else "black")
    ax.set_xticks(range(levels), [f"1/{2 ** r}" if r else "1" for r in range(levels)])
    ax.set_yticks(range(layers_), [f"layer {i + 1}" for i in range(layers_)])
    ax.set_xlabel("resolution (level)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if beta is not None:
        beta = np.asarray(beta, dtype=float)
        bx = axes[0][1]
        bx.barh(range(2, 2 + len(beta)), beta, color="tab:orange")
        bx.invert_yaxis()
        bx.set_yticks(range(2, 2 + len(beta)), [f"layer {i}" for i in range(2, 2 + len(beta))])
        bx.set_xlabel("softmax(beta)")
        bx.set_title("learned depth", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def query_table_curve(rows, path, title="Width-resolution configurations"):
    """Top-1 (%) against MMACs of a MutualNet query table (seed 003, Fig. 5): every
    configuration as a point, each resolution's width sweep as a thin line in its colour, and
    the best configuration under each MACs budget (`bl_keras.query_table.pareto_front`) as a
    thick curve coloured by the resolution it selects.

    Args:
        rows: `query_table` rows (dicts with "width", "resolution", "macs", "top1").
        path: PNG file to write.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("query_table_curve needs at least one row")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    _draw_query_table(ax, rows, title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_query_table(ax, rows, title):
    from bl_keras.query_table import pareto_front

    resolutions = sorted({r["resolution"] for r in rows}, reverse=True)
    cmap = plt.get_cmap("tab10")
    colour = {res: cmap(i % 10) for i, res in enumerate(resolutions)}
    for res in resolutions:
        sweep = sorted((r for r in rows if r["resolution"] == res), key=lambda r: r["macs"])
        ax.plot([r["macs"] / 1e6 for r in sweep], [100 * r["top1"] for r in sweep], "o-",
                color=colour[res], alpha=0.35, lw=1, ms=3)
    front = pareto_front(rows)
    xs = [r["macs"] / 1e6 for r in front]
    ys = [100 * r["top1"] for r in front]
    ax.plot(xs, ys, color="0.6", lw=1, ls=":", zorder=2)  # joins runs of different sizes
    start = 0
    for i in range(1, len(front) + 1):
        if i == len(front) or front[i]["resolution"] != front[start]["resolution"]:
            res = front[start]["resolution"]
            ax.plot(xs[start:i], ys[start:i], "o-", color=colour[res], lw=2.5, ms=5, zorder=3)
            start = i
    for res in resolutions:
        ax.plot([], [], "o-", color=colour[res], lw=2.5, label=f"{res}x{res}")
    ax.legend(title="best at resolution", fontsize=8, title_fontsize=8, loc="lower right")
    for row in front:
        ax.annotate(f"{row['width']:g}x", (row["macs"] / 1e6, 100 * row["top1"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=6)
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def mutualnet_comparison(curves, path, points=None, title="Accuracy against MACs"):
    """Top-1 (%) against MMACs of several slimmable models' query tables (seed 003, Figs. 4
    and 6): for each curve, every configuration as a faint point and the best configuration
    under each MACs budget (`bl_keras.query_table.pareto_front`) as a line; each `points`
    series (e.g. independently trained networks) as markers labelled "width x @ resolution".

    Args:
        curves: mapping label -> `query_table` rows (dicts with "width", "resolution",
            "macs", "top1").
        path: PNG file to write.
        points: optional mapping label -> rows drawn as labelled markers only.
    """
    from bl_keras.query_table import pareto_front

    points = points or {}
    if not any(list(rows) for rows in [*curves.values(), *points.values()]):
        raise ValueError("mutualnet_comparison needs at least one row")
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    markers = "o^sDv<>"
    index = 0
    for index, (label, rows) in enumerate(curves.items()):
        rows = list(rows)
        if not rows:
            continue
        colour = cmap(index % 10)
        ax.scatter([r["macs"] / 1e6 for r in rows], [100 * r["top1"] for r in rows],
                   color=colour, alpha=0.25, s=10)
        front = pareto_front(rows)
        ax.plot([r["macs"] / 1e6 for r in front], [100 * r["top1"] for r in front],
                marker=markers[index % len(markers)], color=colour, lw=2, ms=4, label=label,
                ls=("-", "--", ":", "-.")[index % 4], zorder=3 + (index == 1))
    for offset, (label, rows) in enumerate(points.items(), index + 1):
        rows = list(rows)
        if not rows:
            continue
        colour = cmap(offset % 10)
        ax.scatter([r["macs"] / 1e6 for r in rows], [100 * r["top1"] for r in rows],
                   color=colour, marker="*", s=70, label=label, zorder=4)
        for r in rows:
            ax.annotate(f"{r['width']:g}x@{r['resolution']}",
                        (r["macs"] / 1e6, 100 * r["top1"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=6, color=colour)
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def search_trials(trials, front, path, cost="macs", query_table=None, budget=None,
                  title="Search: validation top-1 against compute"):
    """Every completed trial of a search as a point (top-1 % against MMACs or ms), the Pareto
    front as a line and the budget as a dashed vertical line; with `query_table` (rows with
    "width", "resolution", "macs", "top1"), MutualNet's query-table curve (Fig. 5) beside it.

    Args:
        trials: dicts with `val_top1` and `cost` (None values are skipped).
        front: the non-dominated trials, cheapest first.
        path: PNG file to write.
        cost: "macs" or "latency_ms".
        query_table: optional query-table rows for the second panel.
        budget: the budget on `cost` (drawn when given).
    """
    scale, label = (1e6, "MMACs per image") if cost == "macs" else (1.0, "batch-1 ms (TFLite)")
    panels = 2 if query_table else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), dpi=120, squeeze=False)
    ax = axes[0][0]
    done = [t for t in trials if t.get(cost) is not None and t.get("val_top1") is not None]
    ax.scatter([t[cost] / scale for t in done], [100 * t["val_top1"] for t in done], s=28,
               color="tab:blue", alpha=0.7, label="trials")
    if front:
        ax.plot([t[cost] / scale for t in front], [100 * t["val_top1"] for t in front], "-o",
                color="tab:red", markersize=4, label="Pareto front")
    if budget is not None:
        ax.axvline(budget / scale, color="gray", linestyle="--", label="budget")
    ax.set_xlabel(label)
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if query_table:
        _draw_query_table(axes[0][1], list(query_table), "query table: best per MACs budget")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
