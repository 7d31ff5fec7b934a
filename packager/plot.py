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
PLOT_VERSION = 1  # bump when the drawing changes, so that existing plots are redrawn


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
        if seed["train"]:
            xs, ys = zip(*seed["train"])
            ax.plot(xs, ys, color=color, linewidth=1.2, label=f"seed {seed['seed']} train")
        if seed["val"]:
            xs, ys = zip(*seed["val"])
            ax.plot(xs, ys, color=color, linestyle="--", marker="o", markersize=3, linewidth=1.2,
                    label=f"seed {seed['seed']} validation")
        step, final = seed["final"]
        if step is not None:
            ax.plot([step], [final], color=color, marker="*", markersize=9, linestyle="none")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"{title}: train and validation loss per seed (star: final scored val_loss)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    # No Software/date metadata: the bytes depend only on the data and matplotlib's version.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
