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
