"""Figures the report draws itself from a directory's records: training curves and a forest plot.

Axes carry their units and N. Nothing here trains or samples; each figure is a function of JSON lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from dreamdata.reports.figures import save_figure  # noqa: E402

# metrics.jsonl keys drawn as training curves: (key, legend label)
LOSS_KEYS = (("loss", "train loss"), ("val_loss", "held-out loss"), ("val_loss_ema", "held-out loss (EMA)"))
GAN_LOSS_KEYS = (("loss", "discriminator loss"), ("loss_generator", "generator loss"),
                 ("val_loss", "held-out D loss"), ("val_loss_ema", "held-out D loss (EMA)"))
METADATA = {"Software": "dreamdata report"}  # no matplotlib version in the bytes: regenerating gives the same file


def training_curves(records: list[dict[str, Any]], out: Path, gan: bool, batch_size: int,
                    held_out_n: Optional[int]) -> Optional[Path]:
    """Loss (and held-out loss), learning rate and throughput against step; None without loss records."""
    logged = [r for r in records if "loss" in r]
    if not logged:
        return None
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100, gridspec_kw={"width_ratios": [2, 1, 1]})
    for key, label in GAN_LOSS_KEYS if gan else LOSS_KEYS:
        points = [(r["step"], r[key]) for r in logged if r.get(key) is not None]
        if points:
            if key.startswith("val_") and held_out_n:
                label = f"{label}, N = {held_out_n} images"
            axes[0].plot(*zip(*points), marker="o" if key.startswith("val_") else None, markersize=3, label=label)
    axes[0].set_ylabel("loss (mean per image)")
    if not gan and all((r.get("loss") or 0) > 0 for r in logged):
        axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"loss (train: mean over each logging window, batch {batch_size})", fontsize=9)
    for axis, key, label in ((axes[1], "lr", "learning rate"), (axes[2], "img_per_s", "images / s")):
        points = [(r["step"], r[key]) for r in logged if r.get(key) is not None]
        if points:
            axis.plot(*zip(*points))
        axis.set_ylabel(label)
        axis.set_title(label, fontsize=9)
    for axis in axes:
        axis.set_xlabel("training step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, out, metadata=METADATA)


def forest_plot(comparisons: dict[str, dict[str, Any]], out: Path) -> Optional[Path]:
    """Each paired difference (percentage points) with its 95% CI, one row per comparison; None when empty."""
    rows = [(name, c) for name, c in comparisons.items() if c.get("mean_difference") is not None]
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.4), dpi=100)
    for position, (name, c) in enumerate(rows):
        mean = 100 * c["mean_difference"]
        low, high = (100 * c["ci_low"], 100 * c["ci_high"]) if c.get("ci_low") is not None else (mean, mean)
        axis.plot([low, high], [position, position], color="tab:blue", linewidth=2)
        axis.plot([mean], [position], "o", color="tab:blue")
        axis.annotate(f"{mean:+.2f} [{low:.2f}, {high:.2f}]", (mean, position), textcoords="offset points",
                      xytext=(0, 7), ha="center", fontsize=8)
    axis.axvline(0.0, color="gray", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(rows)), [f"{name} (N = {c.get('n', '?')} seeds)" for name, c in rows], fontsize=8)
    axis.set_ylim(-0.7, len(rows) - 0.3)
    axis.invert_yaxis()
    axis.set_xlabel("difference in test accuracy (percentage points), mean and 95% CI")
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    return save_figure(figure, out, metadata=METADATA)


def metric_curves(records: list[dict[str, Any]], out: Path) -> Optional[Path]:
    """Every ``eval_*`` metric logged during training against step, one panel each, N in the title."""
    keys = sorted({key for r in records for key in r if key.startswith("eval_")
                   and key not in ("eval_n", "eval_seconds") and not key.endswith("_std")})
    if not keys:
        return None
    figure, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.2), dpi=100, squeeze=False)
    for axis, key in zip(axes[0], keys):
        rows = [r for r in records if r.get(key) is not None]
        spread = f"{key}_std"
        if rows and all(r.get(spread) is not None for r in rows):
            axis.errorbar([r["step"] for r in rows], [r[key] for r in rows], yerr=[r[spread] for r in rows],
                          marker="o", capsize=3)
        else:
            axis.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o")
        n = rows[-1].get("eval_n", "?") if rows else "?"
        axis.set_title(f"{key[5:]} (N = {n} samples)", fontsize=9)
        axis.set_xlabel("training step")
        axis.set_ylabel(key[5:])
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, out, metadata=METADATA)
