"""Image grids of samples, written to disk atomically.

Images are float tensors in ``[-1, 1]``; grids are laid out with :func:`torchvision.utils.make_grid` and
saved with PIL (grayscale stays grayscale). Files are written to a temporary name in the destination
directory and moved into place with ``os.replace``, so a reader never sees a half-written image.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from torchvision.utils import make_grid

__all__ = ["class_grid", "grid_labels", "image_grid", "save_grid"]


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Lay out ``images`` ``[N, C, H, W]`` in ``[-1, 1]`` as a uint8 ``[H', W', C]`` CPU tensor.

    ``nrow`` is the number of images per row (torchvision's naming). 1-channel input gives ``C = 1``.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C in (1, 3), got shape {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    unit = ((images.detach().float().cpu().nan_to_num(0.0).clamp(-1.0, 1.0) + 1.0) / 2.0)
    grid = make_grid(unit, nrow=nrow, padding=padding, pad_value=pad_value)  # [3, H', W'] (gray repeated)
    if images.shape[1] == 1:
        grid = grid[:1]
    return (grid * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, padding: int = 2) -> Path:
    """Save ``images`` ``[N, C, H, W]`` in ``[-1, 1]`` as one grid image (format from the suffix), atomically."""
    path = Path(path)
    grid = image_grid(images, nrow, padding=padding).numpy()
    picture = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot tell the image format of {str(path)!r} from its suffix (use e.g. .png)")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            picture.save(file, format=image_format)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def grid_labels(num_classes: int, per_class: int, device: Optional[torch.device | str] = None) -> torch.Tensor:
    """Class labels ``[0]*per_class + [1]*per_class + ...``: the order :func:`class_grid` expects."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def class_grid(images: torch.Tensor, per_class: int, path: str | os.PathLike, padding: int = 2) -> Path:
    """Save a grid with one row per class, from ``images`` ordered by class (``per_class`` each)."""
    if per_class < 1 or images.shape[0] % per_class != 0:
        raise ValueError(f"class_grid needs a whole number of rows: {images.shape[0]} images, "
                         f"per_class={per_class!r}")
    return save_grid(images, path, nrow=per_class, padding=padding)
