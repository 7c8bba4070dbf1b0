"""Confusion-matrix figure: rows = true class, columns = predicted, cells = share of the row (recall)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dreamdata.reports.figures import save_figure


def write_confusion_png(path: str | Path, confusion: torch.Tensor, class_names: Sequence[str], title: str) -> Path:
    """Row-normalised heat map of ``confusion`` with the raw counts printed in each cell, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = confusion.to(torch.float64)
    shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.55 * len(class_names) + 2.0)
    figure, axes = plt.subplots(figsize=(size + 1.0, size))
    image = axes.imshow(shares.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(class_names))
    axes.set_xticks(list(ticks), [str(n) for n in class_names], rotation=45, ha="right", fontsize=8)
    axes.set_yticks(list(ticks), [str(n) for n in class_names], fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    for i in ticks:
        for j in ticks:
            value = counts[i, j].item()
            text = f"{value:.0f}" if value == int(value) else f"{value:.1f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=6,
                      color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)
