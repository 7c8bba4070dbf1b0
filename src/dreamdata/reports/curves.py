"""Loss and sample-quality curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from dreamdata.reports.figures import save_figure  # noqa: E402
from dreamdata.training.run_dir import read_metrics  # noqa: E402


def plot_loss_curve(run_dir: str | Path, out: str | Path) -> Path:
    """Training loss (and held-out loss where logged) against step, saved as a PNG."""
    records = [r for r in read_metrics(run_dir) if "loss" in r]
    if not records:
        raise ValueError(f"{run_dir}: metrics.jsonl has no loss records to plot")
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
    return save_figure(figure, out)


METRIC_PANELS = (("eval_fid", "FID", None), ("eval_kid", "KID", "eval_kid_std"),
                 ("eval_is", "Inception Score", "eval_is_std"), ("eval_precision", "precision", None),
                 ("eval_recall", "recall", None))


def plot_metric_curves(run_dir: str | Path, out: str | Path) -> Path:
    """FID / KID / IS / precision / recall logged during training against step, one panel each."""
    records = read_metrics(run_dir)
    panels = [(key, label, spread) for key, label, spread in METRIC_PANELS if any(key in r for r in records)]
    if not panels:
        raise ValueError(f"{run_dir}: metrics.jsonl has no evaluation records (set evaluation.every)")
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), dpi=120, squeeze=False)
    for axis, (key, label, spread) in zip(axes[0], panels):
        rows = [r for r in records if key in r]
        steps, values = [r["step"] for r in rows], [r[key] for r in rows]
        if spread and all(spread in r for r in rows):
            axis.errorbar(steps, values, yerr=[r[spread] for r in rows], marker="o", capsize=3)
        else:
            axis.plot(steps, values, marker="o")
        axis.set_title(f"{label} (N={rows[-1].get('eval_n', '?')})")
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, out)
