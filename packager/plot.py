"""Loss curves of a record's seeds, drawn from their logs (matplotlib, the optional `plots` extra).

The PNG is a generated file like README.md. Drawing depends on the matplotlib version and its
fonts, so golf-pack records a fingerprint of the plotted data in the manifest and keeps the PNG
already in the folder when the data have not changed: re-rendering is byte-identical on any
machine, with or without matplotlib. Without matplotlib and without a reusable PNG, the plot is
skipped with a one-line note; nothing fails.
"""

from __future__ import annotations

import hashlib
import io
import json

PLOT_NAME = "loss_curves.png"
PLOT_VERSION = 2  # bump when the drawing changes, so that existing plots are redrawn
FEW_POINTS = 30  # a curve with at most this many points is drawn with a marker on each


def plot_data(runs) -> dict:
    """What the plot shows, per seed: (step, train_loss) and (step, val_loss) points."""
    return {"version": PLOT_VERSION,
            "seeds": [{"seed": r.seed, "log": r.log, "train": [[s, x] for s, x in r.train_curve],
                       "val": [[s, x] for s, x, _ in r.val_curve],
                       "final": [r.result.get("steps"), r.val_loss]} for r in runs]}


def data_sha256(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def draw(data: dict, title: str) -> bytes | None:
    """PNG bytes, or None when matplotlib is not installed."""
    fig = figure(data, title)
    if fig is None:
        return None
    buf = io.BytesIO()
    # No Software/date metadata: the bytes depend only on the data and matplotlib's version.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def figure(data: dict, title: str):
    """The matplotlib Figure of the plot, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, seed in enumerate(data["seeds"]):
        color = colors[i % len(colors)]
        # A short run has a handful of points: markers keep each visible (one point draws no line).
        for key, style, name in (("train", "-", "train"), ("val", "--", "validation")):
            if seed[key]:
                xs, ys = zip(*seed[key])
                ax.plot(xs, ys, color=color, linestyle=style, linewidth=1.2, markersize=3,
                        marker="o" if key == "val" or len(xs) <= FEW_POINTS else None,
                        label=f"seed {seed['seed']} {name}")
        step, final = seed["final"]
        if step is not None:
            ax.plot([step], [final], color=color, marker="*", markersize=9, linestyle="none",
                    label=f"seed {seed['seed']} final scored val_loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"{title}: train and validation loss per seed", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig
