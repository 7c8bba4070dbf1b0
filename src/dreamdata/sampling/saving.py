"""Saving samples: the uint8 pixels every saved image uses, PNG files, preview grids, ``samples.npz``.

Samples come out of :func:`dreamdata.sampling.generate.generate` as floats in ``[-1, 1]``. Everything that
stores them - ``dreamdata sample``, ``dreamdata dream``, interpolation strips, the sweeps' and evaluations'
image sets - converts them with :func:`to_uint8`, so a PNG, an ``.npz`` and the pixels a metric sees are the
same numbers, and NaN/inf are refused rather than written as grey images. Files are written atomically.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from dreamdata.atomic import atomic_path
from dreamdata.sampling.generate import check_finite

__all__ = [
    "MAX_GRID_COLUMNS",
    "class_directory_names",
    "grid_preview",
    "to_uint8",
    "uint8_grid",
    "write_png",
    "write_samples",
]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` (any shape) -> uint8 ``round((x + 1) * 127.5)``, clamped to ``0..255``.

    NaN or inf raise :class:`~dreamdata.sampling.generate.NonFiniteSamplesError` (they used to become flat
    grey images that look like data). Same layout and device as the input (use ``.permute(0, 2, 3, 1)`` for
    NHWC). The rounding matches :func:`dreamdata.sampling.grid.image_grid` (``(x + 1) / 2 * 255``) except
    for values that land within float32 rounding of a half-integer.
    """
    check_finite(images, what="the images to save")
    unit = images.detach().float().clamp(-1.0, 1.0)
    return ((unit + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def uint8_grid(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """Images in ``[-1, 1]`` ``[N, C, H, W]`` -> uint8 grid ``[H', W', C]`` (CPU), ``nrow`` images per row.

    Like :func:`dreamdata.sampling.grid.image_grid` (white padding, gray stays gray) but from
    :func:`to_uint8`'s pixels, so a grid shows exactly the pixels saved elsewhere.
    """
    pixels = to_uint8(images.cpu())
    grid = make_grid(pixels, nrow=nrow, padding=padding, pad_value=255)  # [3, H', W'] (gray repeated)
    grid = grid[:1] if pixels.shape[1] == 1 else grid
    return grid.permute(1, 2, 0).contiguous()


def class_directory_names(class_names: Sequence[str]) -> list[str]:
    """File-system-safe, distinct directory names for classes (``T-shirt/top`` -> ``T-shirt_top``)."""
    safe = [re.sub(r"[^\w.-]+", "_", name).strip("._") or f"class{index}" for index, name in enumerate(class_names)]
    return [name if safe.count(name) == 1 else f"{name}-{index}" for index, name in enumerate(safe)]


def write_png(pixels: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """Save uint8 ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` pixels as a PNG, atomically."""
    array = pixels.cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())
    return path


MAX_GRID_COLUMNS = 16  # grid.png is a preview: at most 16 samples per row (and 16 rows when unconditional)


def grid_preview(images: torch.Tensor, labels: Optional[torch.Tensor], per_row: int) -> tuple[torch.Tensor, int]:
    """The images ``grid.png`` shows and its row length: the first ``MAX_GRID_COLUMNS`` of each class row,
    or, unconditionally, up to ``MAX_GRID_COLUMNS`` rows of ``MAX_GRID_COLUMNS`` (all samples are still
    written individually and to ``samples.npz``)."""
    if labels is None:
        shown = images[:MAX_GRID_COLUMNS * MAX_GRID_COLUMNS]
        return shown, max(1, min(MAX_GRID_COLUMNS, shown.shape[0]))
    rows = images.reshape(images.shape[0] // per_row, per_row, *images.shape[1:])
    return rows[:, :MAX_GRID_COLUMNS].flatten(0, 1), min(per_row, MAX_GRID_COLUMNS)


def write_samples(out_dir: str | Path, images: torch.Tensor, labels: Optional[torch.Tensor],
                  class_names: Sequence[str], per_row: int, extra_arrays: Optional[dict] = None) -> dict[str, Path]:
    """Write ``grid.png``, one PNG per sample and ``samples.npz`` into ``out_dir``; return their paths.

    ``images`` ``[N, C, H, W]`` in ``[-1, 1]``, ordered by row (``per_row`` per row, one row per class for
    class-conditional samples). Individual images go to ``<class>/<k>.png`` (``k`` = position within the
    class, zero-padded; ``unconditional/`` when ``labels`` is ``None``). ``samples.npz`` holds ``images``
    (uint8 NHWC), ``labels`` (int64, ``-1`` for unconditional samples), ``class_names`` and any
    ``extra_arrays``. Every file is written atomically.
    """
    out_dir = Path(out_dir)
    pixels = to_uint8(images.cpu())  # [N, C, H, W] uint8
    count = pixels.shape[0]
    written: dict[str, Path] = {}
    written["grid"] = write_png(uint8_grid(*grid_preview(images, labels, per_row)), out_dir / "grid.png")
    directories = class_directory_names(class_names)
    seen: dict[int, int] = {}
    width = max(4, len(str(max(count - 1, 0))))
    for row in range(count):
        label = -1 if labels is None else int(labels[row])
        position = seen.get(label, 0)
        seen[label] = position + 1
        folder = "unconditional" if label < 0 else directories[label]
        write_png(pixels[row].permute(1, 2, 0), out_dir / folder / f"{position:0{width}d}.png")
    written["images"] = out_dir
    label_array = (np.full(count, -1, dtype=np.int64) if labels is None
                   else labels.detach().cpu().to(torch.int64).numpy())
    arrays = {"images": pixels.permute(0, 2, 3, 1).contiguous().numpy(), "labels": label_array,
              "class_names": np.array(list(class_names), dtype=str), **(extra_arrays or {})}
    npz = out_dir / "samples.npz"
    with atomic_path(npz) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)
    written["npz"] = npz
    return written
