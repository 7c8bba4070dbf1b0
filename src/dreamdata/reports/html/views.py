"""Viewing copies of small-image grids: nearest-neighbour upscaled, with the class names on the rows.

A 28- or 32-pixel sample is a few millimetres on a screen; the report shows each image at least
``MIN_CELL_PX`` pixels wide by repeating every pixel (no smoothing, so what is shown is exactly what was
sampled). The raw grid is left untouched; the copy goes into the report's own folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dreamdata.atomic import atomic_path

MIN_CELL_PX = 64
PADDING = 2  # pixels between the cells of a dreamdata grid (save_grid, uint8_grid)
LABEL_FONT_PX = 15


def grid_rows(height: int, cell: int, padding: int = PADDING) -> int:
    """Rows of a grid image ``height`` pixels tall with ``cell``-pixel images and ``padding`` between them."""
    return max(1, round((height - padding) / (cell + padding)))


def upscale_factor(cell: int, min_cell_px: int = MIN_CELL_PX) -> int:
    return max(1, math.ceil(min_cell_px / max(1, cell)))


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=LABEL_FONT_PX)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def labelled_view(source: Path, out: Path, cell: int, row_labels: Sequence[str] = (),
                  min_cell_px: int = MIN_CELL_PX, padding: int = PADDING) -> Path:
    """Write ``source`` (a grid of ``cell``-pixel images) upscaled by an integer factor, with ``row_labels``
    (one per grid row, when they match the row count) drawn left of the rows; returns ``out``."""
    with Image.open(source) as opened:
        pixels = np.asarray(opened.convert("RGB"))
    factor = upscale_factor(cell, min_cell_px)
    big = pixels.repeat(factor, axis=0).repeat(factor, axis=1)  # nearest neighbour, exactly
    rows = grid_rows(pixels.shape[0], cell, padding)
    labels = [str(label) for label in row_labels] if len(row_labels) == rows else []
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max((int(measure.textlength(label, font=font)) for label in labels), default=-12) + 12
    canvas = Image.new("RGB", (big.shape[1] + label_width, big.shape[0]), "white")
    canvas.paste(Image.fromarray(big), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    for row, label in enumerate(labels):
        centre = (padding + row * (cell + padding) + cell / 2) * factor
        draw.text((label_width - 8, centre), label, fill="black", font=font, anchor="rm")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as temporary:
        canvas.save(temporary, format="PNG")
    return out

