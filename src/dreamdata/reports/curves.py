"""Loss curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from dreamdata.atomic import atomic_path  # noqa: E402
from dreamdata.training.run_dir import read_metrics  # noqa: E402


def plot_loss_curve(run_dir: str | Path, out: str | Path) -> Path:
    """Training loss (and held-out loss where logged) against step, saved as a PNG."""
    records = read_metrics(run_dir)
    if not records:
        raise ValueError(f"{run_dir}: metrics.jsonl has no records to plot")
    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    axis.plot([r["step"] for r in records], [r["loss"] for r in records], label="train loss")
    for key, label in (("val_loss", "held-out loss"), ("val_loss_ema", "held-out loss (EMA)")):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            axis.plot(*zip(*points), marker="o", label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    out = Path(out)
    with atomic_path(out) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return out
