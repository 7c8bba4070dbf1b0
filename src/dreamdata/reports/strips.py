"""Labelled image strips for the reports: the reverse process of a sampler and the forward noising process.

A figure is a stack of *blocks*, one per class. A block is a small grid of images - ``R`` rows by ``K``
columns, laid out with :func:`torchvision.utils.make_grid` from the exact sample pixels - drawn into one
matplotlib axes whose x ticks name the columns (``t=...``) and whose y ticks name the rows (``x_t``,
``x̂0``). Every block of a figure shares the same column labels.

* :func:`write_trajectory_strip`: per class, ``x_t`` (top row) and the network's predicted ``x̂0``
  (bottom row) at the recorded steps of the reverse process (``trajectory.png``).
* :func:`write_forward_strip`: per class, a real image ``x_0`` and ``q_sample(x_0, t)`` at evenly spaced
  ``t`` (``forward.png``).

The PNG carries its layout as text chunks (``dreamdata:rows``, ``dreamdata:columns``,
``dreamdata:column_labels``), so a reader - or a test - can check what was drawn without parsing pixels.
Files are written atomically (:func:`dreamdata.atomic.atomic_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from dreamdata.reports.figures import save_figure  # noqa: E402

__all__ = ["StripBlock", "write_forward_strip", "write_strip_figure", "write_trajectory_strip"]

PADDING = 1  # pixels between cells (in image pixels, before matplotlib scales the block)


@dataclass
class StripBlock:
    """One block of a strip figure: ``images`` ``[R, K, C, H, W]`` in ``[-1, 1]``, a title and row labels."""

    title: str
    images: torch.Tensor
    row_labels: Sequence[str]


def _block_pixels(images: torch.Tensor) -> torch.Tensor:
    """``[R, K, C, H, W]`` in ``[-1, 1]`` -> uint8 ``[H', W', 3]`` grid, ``K`` cells per row, white padding."""
    rows, columns = images.shape[:2]
    flat = images.detach().float().cpu().nan_to_num(0.0).clamp(-1.0, 1.0).flatten(0, 1)
    unit = (flat + 1.0) / 2.0
    grid = make_grid(unit, nrow=columns, padding=PADDING, pad_value=1.0)  # [3, H', W'] (gray repeated)
    return (grid * 255.0).round().to(torch.uint8).permute(1, 2, 0)


def write_strip_figure(path: str | Path, blocks: Sequence[StripBlock], column_labels: Sequence[str],
                       title: str = "", cell_inches: float = 0.62) -> Path:
    """Draw ``blocks`` (stacked vertically) with shared ``column_labels`` and save a PNG at ``path``."""
    if not blocks:
        raise ValueError("a strip figure needs at least one block")
    columns = len(column_labels)
    for block in blocks:
        if block.images.ndim != 5 or block.images.shape[1] != columns or block.images.shape[2] not in (1, 3):
            raise ValueError(f"block {block.title!r}: images must be [R, {columns}, C, H, W] with C in (1, 3), "
                             f"got shape {tuple(block.images.shape)}")
        if len(block.row_labels) != block.images.shape[0]:
            raise ValueError(f"block {block.title!r}: {len(block.row_labels)} row labels for "
                             f"{block.images.shape[0]} rows")
    size = blocks[0].images.shape[-1]
    cell = size + PADDING
    width = max(3.0, cell_inches * columns + 1.2)
    heights = [cell_inches * block.images.shape[0] + 0.55 for block in blocks]
    figure, axes = plt.subplots(len(blocks), 1, figsize=(width, sum(heights) + (0.4 if title else 0.1)),
                                dpi=120, squeeze=False, gridspec_kw={"height_ratios": heights})
    for axis, block in zip(axes[:, 0], blocks):
        pixels = _block_pixels(block.images).numpy()
        axis.imshow(pixels, interpolation="nearest")
        axis.set_xticks([PADDING + column * cell + (size - 1) / 2 for column in range(columns)])
        axis.set_xticklabels(list(column_labels), fontsize=7)
        axis.set_yticks([PADDING + row * cell + (size - 1) / 2 for row in range(block.images.shape[0])])
        axis.set_yticklabels(list(block.row_labels), fontsize=8)
        axis.tick_params(length=0, pad=2)
        for spine in axis.spines.values():
            spine.set_visible(False)
        axis.set_title(block.title, fontsize=9, loc="left")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    plain_labels = ",".join(label.replace("$", "") for label in column_labels)
    metadata = {"Software": "dreamdata", "dreamdata:rows": str(sum(block.images.shape[0] for block in blocks)),
                "dreamdata:columns": str(columns), "dreamdata:column_labels": plain_labels}
    return save_figure(figure, path, metadata=metadata)


def write_trajectory_strip(path: str | Path, class_names: Sequence[str], timesteps: Sequence[int],
                           x_t: torch.Tensor, x0_hat: torch.Tensor, title: str = "") -> Path:
    """Per class, the reverse process: ``x_t`` (top row) and the predicted ``x̂0`` (bottom row).

    ``x_t`` and ``x0_hat`` are ``[num_classes, K, C, H, W]``; column ``k`` shows the sampler's state at
    training timestep ``timesteps[k]`` and the clean image the network predicts from it.
    """
    if x_t.shape != x0_hat.shape or x_t.ndim != 5 or x_t.shape[:2] != (len(class_names), len(timesteps)):
        raise ValueError(f"x_t and x0_hat must both be [{len(class_names)}, {len(timesteps)}, C, H, W], got "
                         f"{tuple(x_t.shape)} and {tuple(x0_hat.shape)}")
    blocks = [StripBlock(name, torch.stack([x_t[index], x0_hat[index]]), ["$x_t$", r"$\hat{x}_0$"])
              for index, name in enumerate(class_names)]
    return write_strip_figure(path, blocks, [f"t={int(t)}" for t in timesteps], title=title)


def write_forward_strip(path: str | Path, class_names: Sequence[str], timesteps: Sequence[int],
                        clean: torch.Tensor, noised: torch.Tensor, title: str = "") -> Path:
    """Per class, a real image ``x_0`` followed by ``q_sample(x_0, t)`` at each of ``timesteps``.

    ``clean`` is ``[num_classes, C, H, W]`` and ``noised`` ``[num_classes, K, C, H, W]``; the figure has
    ``K + 1`` columns labelled ``x_0, t=..``.
    """
    if clean.ndim != 4 or noised.ndim != 5 or noised.shape[:2] != (len(class_names), len(timesteps)) \
            or noised.shape[2:] != clean.shape[1:] or clean.shape[0] != len(class_names):
        raise ValueError(f"clean must be [{len(class_names)}, C, H, W] and noised "
                         f"[{len(class_names)}, {len(timesteps)}, C, H, W], got {tuple(clean.shape)} and "
                         f"{tuple(noised.shape)}")
    images = torch.cat([clean.unsqueeze(1).to(noised), noised], dim=1)
    blocks = [StripBlock(name, images[index:index + 1], [""]) for index, name in enumerate(class_names)]
    return write_strip_figure(path, blocks, ["$x_0$", *(f"t={int(t)}" for t in timesteps)], title=title)
