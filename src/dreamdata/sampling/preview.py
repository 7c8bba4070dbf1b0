"""A quick look at a model: one row of samples per class, written as a PNG grid.

Used at the end of training and by ``dreamdata demo``. It draws exactly what ``dreamdata sample RUN
--seed S --n K`` draws for the same checkpoint (sample ``k`` of class ``c`` has global index
``k * num_classes + c`` and its own seeded noise), so a grid in a run directory can be reproduced later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from dreamdata.sampling.generate import StartSampler, generate
from dreamdata.sampling.grid import save_grid
from dreamdata.sampling.registry import default_sampler


def class_major_indices(num_classes: int, per_class: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Labels and global sample indices for ``per_class`` samples of every class, ordered class by class."""
    if num_classes == 0:
        return None, torch.arange(per_class)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    positions = torch.arange(per_class).repeat(num_classes)
    return labels, positions * num_classes + labels


def write_class_grid(network, process, path: Path, per_class: int, steps: int, seed: int, device: torch.device,
                     guidance_scale: float = 0.0, progress: bool = False, sampler: Optional[str] = None,
                     start: Optional[StartSampler] = None) -> Path:
    """Sample ``per_class`` images per class (or one row, unconditional) and save them as a grid.

    ``sampler=None`` picks the process's default (``ddpm``, or ``cold-improved`` for blur); ``start`` is
    passed to :func:`~dreamdata.sampling.generate.generate` (cold diffusion's start distribution).
    """
    num_classes = int(getattr(network, "num_classes", 0))
    labels, indices = class_major_indices(num_classes, per_class)
    images = generate(network, process, labels, indices.numel(), seed, sampler=sampler or default_sampler(process),
                      steps=steps, guidance_scale=guidance_scale if labels is not None else 0.0, batch_size=256,
                      device=device, progress=progress, indices=indices, start=start)
    return save_grid(images, path, nrow=per_class)
