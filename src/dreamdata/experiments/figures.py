"""A sweep's figures, drawn from ``results.jsonl``, the cells' saved samples and the arms' run directories.

Nothing here samples or trains: every figure can be redrawn at any time from what the sweep wrote.
Figures are drawn only where the data varies (a metric-against-guidance plot needs two guidance values):

* ``metric-vs-guidance.png``: the chosen metric against w, one line per arm (and other varying settings);
  ``figures.metric`` may list several metrics (e.g. ``[fid, recall]``), one panel each, in every metric figure;
* ``metric-vs-step.png``: against the training step of the checkpoint (epochs on the top axis when every arm
  takes the same epochs per step);
* ``metric-vs-sampling-steps.png``: against the number of sampling steps, one line per sampler (and arm);
* ``mosaic.png``: every cell at its arm's last checkpoint side by side, one row per class (unconditional cells:
  a near-square grid), same noise;
* ``loss.png``: training and held-out loss of every arm (``figures.loss_skip_first``, ``figures.loss_log``);
* ``alpha_bar.png``: ᾱ_t of every Gaussian arm;
* ``trajectory-<cell>.png``: snapshots of the reverse process (with ``evaluation.trajectory_every``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Union

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dreamdata.reports.figures import save_figure  # noqa: E402

__all__ = ["draw_figures", "metric_value", "read_results"]

METRIC_LABELS = {"fid": "FID", "kid_mean": "KID", "is_mean": "Inception Score", "precision": "precision",
                 "recall": "recall", "held_out_loss": "held-out loss"}
MOSAIC_PANELS = 8  # cells per mosaic figure
MOSAIC_COLUMNS = 4  # panels side by side
MOSAIC_PANEL_INCHES = (3.4, 3.2)  # width, height of a panel, unless an unconditional grid needs more
MOSAIC_MIN_IMAGE_INCHES = 0.35  # an unconditional panel grows so that each of its samples is at least this wide
MOSAIC_PANEL_MARGIN_INCHES = (1.2, 1.0)  # of a panel, not images: the row label left, the two-line title above


def read_results(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "results.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metric_value(result: dict[str, Any], metric: str) -> Optional[float]:
    key = "kid_mean" if metric == "kid" else "is_mean" if metric == "is" else metric
    value = result["metrics"].get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _label(result: dict[str, Any], keys: list[str]) -> str:
    parts = [result["arm"]] + [f"{key}={result['sampling'].get(key)}" for key in keys]
    return ", ".join(parts)


def _epochs_per_step(results: list[dict[str, Any]]) -> Optional[float]:
    """Epochs per training step shared by every result that records one (same data size and batch in every
    arm), or None when arms differ or none records it: then a single top axis in epochs would mislead."""
    ratios = {round(r["epoch"] / r["checkpoint_step"], 9) for r in results
              if isinstance(r.get("epoch"), (int, float)) and r.get("checkpoint_step")}
    return ratios.pop() if len(ratios) == 1 else None


def _line_plot(results: list[dict[str, Any]], x_of, x_label: str, metrics: list[str], other_keys: list[str],
               path: Path, title: str, log_x: bool = False, epochs_per_step: Optional[float] = None,
               min_points: int = 1) -> Optional[Path]:
    """One panel per metric, one line per group of results that agree on everything but x; None when x does
    not vary. Lines with fewer than ``min_points`` x values are left out (over training, a cell scored at the
    last checkpoint only is a dot, not a curve). With ``epochs_per_step`` the top axis reads the same x in
    training epochs."""
    panels = []
    for metric in metrics:
        points = [(x_of(r), metric_value(r, metric), r) for r in results]
        points = [p for p in points if p[0] is not None and p[1] is not None]
        xs_per_line: dict[str, set] = defaultdict(set)
        for x, _, r in points:
            xs_per_line[_label(r, other_keys)].add(x)
        points = [p for p in points if len(xs_per_line[_label(p[2], other_keys)]) >= min_points]
        if len({p[0] for p in points}) >= 2:
            panels.append((metric, points))
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), dpi=120, squeeze=False)
    n = results[0].get("n")
    for axis, (metric, points) in zip(axes[0], panels):
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for x, y, r in points:
            lines[_label(r, other_keys)].append((x, y))
        for label, xy in sorted(lines.items()):
            xy.sort()
            axis.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=label)
        if log_x:  # ticks at the step counts measured, written plainly (not 10^2, 2x10^2 ...)
            axis.set_xscale("log")
            measured = sorted({p[0] for p in points})
            axis.set_xticks(measured, [f"{x:g}" for x in measured])
            axis.minorticks_off()
        name = METRIC_LABELS.get(metric, metric)
        axis.set_xlabel(x_label)
        axis.set_ylabel(f"{name} (N = {n:,})" if n else name)
        axis.set_title(title.format(metric=name), fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        if epochs_per_step:
            top = axis.secondary_xaxis("top", functions=(lambda step: step * epochs_per_step,
                                                         lambda epoch: epoch / epochs_per_step))
            top.set_xlabel("epoch", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def _varying(results: list[dict[str, Any]], exclude: tuple[str, ...]) -> list[str]:
    keys = sorted({key for r in results for key in r["sampling"]} - set(exclude))
    return [key for key in keys if len({repr(r["sampling"].get(key)) for r in results}) > 1]


def draw_metric_figures(out_dir: Path, results: list[dict[str, Any]], metric: Union[str, list[str]]
                        ) -> list[Path]:
    """The metric(s) against guidance, training step and sampling steps: one figure each, one panel per metric."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    drawn = []
    last = {}
    for r in results:
        last[r["arm"]] = max(last.get(r["arm"], 0), r["checkpoint_step"])
    at_last = [r for r in results if r["checkpoint_step"] == last[r["arm"]]]
    for path in (_line_plot(at_last, lambda r: float(r["sampling"]["guidance"]), "guidance scale w", metrics,
                            _varying(at_last, ("guidance",)), out_dir / "metric-vs-guidance.png",
                            "{metric} against classifier-free guidance (last checkpoint)"),
                 _line_plot(results, lambda r: float(r["checkpoint_step"]), "training step", metrics,
                            _varying(results, ()), out_dir / "metric-vs-step.png",
                            "{metric} over training", epochs_per_step=_epochs_per_step(results), min_points=2),
                 _line_plot(at_last, lambda r: float(r["sampling"]["steps"]), "sampling steps (log scale)", metrics,
                            _varying(at_last, ("steps",)), out_dir / "metric-vs-sampling-steps.png",
                            "{metric} against sampling steps (last checkpoint)", log_x=True)):
        if path is not None:
            drawn.append(path)
    return drawn


def _mosaic_rows(images: np.ndarray, labels: np.ndarray, class_names: list[str]
                ) -> tuple[list[np.ndarray], list[str], bool]:
    """A cell's panel as rows of samples, their labels, and whether it is unconditional.

    Class-conditional samples: one row per class. Unconditional samples: a near-square grid, so that a few samples
    are not one thin strip across the panel: :func:`_grid_width` per row.
    """
    if class_names and labels.min() >= 0:
        return [images[labels == c] for c in range(len(class_names))], list(class_names), False
    per_row = _grid_width(len(images))
    rows = [images[i:i + per_row] for i in range(0, len(images), per_row)]
    return rows, ["unconditional"] + [""] * (len(rows) - 1), True


def _grid_width(count: int) -> int:
    """Samples per row of an unconditional grid of ``count``: the smallest divisor of ``count`` that is at least
    sqrt(count), so every row is full (10 samples: 5 x 2, not 4 + 4 + 2 with two blank tiles), unless that grid
    would be more than twice as wide as ``ceil(sqrt(count))`` (a prime count: 7 is not one strip of 7) - then
    ``ceil(sqrt(count))`` to a row and a short last row."""
    square = max(1, math.ceil(math.sqrt(count)))
    full_rows = [width for width in range(math.isqrt(max(count - 1, 0)) + 1, 2 * square + 1) if count % width == 0]
    return full_rows[0] if full_rows else square


def _mosaic_panel_inches(panels: list[tuple[list[np.ndarray], bool]]) -> tuple[float, float]:
    """Width and height shared by the panels of one mosaic figure, given each panel's rows and whether it is an
    unconditional grid: ``MOSAIC_PANEL_INCHES``, widened or heightened where one of the page's unconditional grids
    needs it for each sample to be at least ``MOSAIC_MIN_IMAGE_INCHES`` across (class rows do not grow the
    panel), then no taller than the page's tallest panel needs at that width (a page of one-class strips is
    short, not a strip in a tall empty box)."""
    width, height = MOSAIC_PANEL_INCHES
    for rows, unconditional in panels:
        if not unconditional:
            continue
        size = rows[0].shape[-1]
        cell = MOSAIC_MIN_IMAGE_INCHES * (size + 1) / size  # a sample and the 1-pixel gap after it
        width = max(width, max(len(row) for row in rows) * cell + MOSAIC_PANEL_MARGIN_INCHES[0])
        height = max(height, len(rows) * cell + MOSAIC_PANEL_MARGIN_INCHES[1])
    tallest = max(len(rows) / max(1, max(len(row) for row in rows)) for rows, _ in panels)  # rows per column
    needed = tallest * (width - MOSAIC_PANEL_MARGIN_INCHES[0]) + MOSAIC_PANEL_MARGIN_INCHES[1]
    return width, min(height, needed)


def draw_mosaics(out_dir: Path, results: list[dict[str, Any]]) -> list[Path]:
    """Cells at their arm's last checkpoint side by side: one panel per cell, one row per class (unconditional
    cells: a near-square grid, see :func:`_mosaic_rows`)."""
    last = {}
    for r in results:
        last[r["arm"]] = max(last.get(r["arm"], 0), r["checkpoint_step"])
    cells = [r for r in results if r["checkpoint_step"] == last[r["arm"]]
             and (out_dir / "cells" / r["cell"] / "samples.npz").is_file()]
    drawn = []
    for page, first in enumerate(range(0, len(cells), MOSAIC_PANELS)):
        chunk = cells[first:first + MOSAIC_PANELS]
        panels = []
        for r in chunk:
            with np.load(out_dir / "cells" / r["cell"] / "samples.npz") as archive:
                images, labels = archive["images"], archive["labels"]
            panels.append((images, *_mosaic_rows(images, labels, r.get("class_names") or [])))
        panel_width, panel_height = _mosaic_panel_inches([(rows, unconditional)
                                                          for _, rows, _, unconditional in panels])
        columns_shown = min(MOSAIC_COLUMNS, len(chunk))
        rows_shown = -(-len(chunk) // columns_shown)
        figure, axes = plt.subplots(rows_shown, columns_shown, figsize=(panel_width * columns_shown + 0.6,
                                                                         panel_height * rows_shown + 0.4),
                                    dpi=130, squeeze=False)
        for axis in axes.flat[len(chunk):]:
            axis.axis("off")
        for axis, r, (images, rows, names, _) in zip(axes.flat, chunk, panels):
            columns = max(len(row) for row in rows)
            channels, size = images.shape[1], images.shape[-1]
            canvas = np.full((len(rows) * (size + 1), columns * (size + 1), channels), 255, dtype=np.uint8)
            for i, row in enumerate(rows):
                for j, image in enumerate(row):
                    canvas[i * (size + 1):i * (size + 1) + size, j * (size + 1):j * (size + 1) + size] = \
                        image.transpose(1, 2, 0)
            axis.imshow(canvas.squeeze(-1) if channels == 1 else canvas, cmap="gray" if channels == 1 else None,
                        vmin=0, vmax=255, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([i * (size + 1) + size / 2 for i in range(len(rows))])
            axis.set_yticklabels(names, fontsize=7)
            axis.set_title(r["cell"].replace("/", "\n", 1), fontsize=8)
        figure.suptitle("samples: the same starting noise in every cell (sample k seeded from (seed, k))",
                        fontsize=8)
        figure.tight_layout()
        name = "mosaic.png" if page == 0 else f"mosaic-{page + 1}.png"
        drawn.append(save_figure(figure, out_dir / name))
    return drawn


def draw_loss_curves(out_dir: Path, run_dirs: dict[str, Path], skip_first: int = 0, log: bool = False
                     ) -> Optional[Path]:
    """Training loss (thin) and held-out loss (markers) of every arm; ``skip_first`` drops early steps."""
    from dreamdata.training.run_dir import read_metrics

    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    drawn = False
    for index, (name, run_dir) in enumerate(sorted(run_dirs.items())):
        records = [r for r in read_metrics(run_dir) if r.get("step", 0) > skip_first] if run_dir.is_dir() else []
        colour = f"C{index % 10}"
        train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
        held_out = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        if train:
            axis.plot(*zip(*train), color=colour, linewidth=1, label=f"{name} train")
            drawn = True
        if held_out:
            axis.plot(*zip(*held_out), color=colour, marker="o", linestyle="--", label=f"{name} held-out")
            drawn = True
    if not drawn:
        plt.close(figure)
        return None
    if log:
        axis.set_yscale("log")
    axis.set_xlabel("training step" + (f" (first {skip_first} dropped)" if skip_first else ""))
    axis.set_ylabel("loss (each arm's own objective)" + (", log scale" if log else ""))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, out_dir / "loss.png")


def draw_trajectories(out_dir: Path, results: list[dict[str, Any]]) -> list[Path]:
    import torch

    from dreamdata.reports.strips import write_trajectory_strip

    drawn = []
    for r in results:
        path = out_dir / "cells" / r["cell"] / "trajectory.npz"
        if not path.is_file():
            continue
        with np.load(path) as archive:
            steps = archive["timesteps"].tolist()
            x_t, x0_hat = (torch.from_numpy(archive[key]).float().div(127.5).sub(1.0) for key in ("x_t", "x0_hat"))
        names = r.get("class_names") or ["unconditional"]
        name = "trajectory-" + r["cell"].replace("/", "_") + ".png"
        drawn.append(write_trajectory_strip(out_dir / name, names[:len(x_t)], steps, x_t, x0_hat,
                                            title=f"{r['cell']}: reverse process snapshots"))
    return drawn


def draw_figures(out_dir: Path, figures, run_dirs: Optional[dict[str, Path]] = None,
                 arm_configs: Optional[dict[str, Any]] = None) -> list[Path]:
    """Every figure the sweep's data supports (see the module docstring); returns their paths."""
    results = read_results(out_dir)
    drawn = draw_metric_figures(out_dir, results, figures.metric) if results else []
    drawn += draw_mosaics(out_dir, results)
    drawn += draw_trajectories(out_dir, results)
    if run_dirs:
        loss = draw_loss_curves(out_dir, run_dirs, figures.loss_skip_first, figures.loss_log)
        drawn += [loss] if loss is not None else []
    schedules = {}
    for name, config in (arm_configs or {}).items():
        if config.process.kind == "gaussian":
            from dreamdata.process import betas_from_config
            from dreamdata.process.schedules import derive_schedule

            schedules[name] = derive_schedule(betas_from_config(config.process)).alpha_bar
    if schedules:
        from dreamdata.reports.schedules import plot_alpha_bar

        drawn.append(plot_alpha_bar(schedules, out_dir / "alpha_bar.png"))
    return drawn
