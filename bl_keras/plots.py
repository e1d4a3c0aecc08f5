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
