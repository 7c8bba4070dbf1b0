"""A quick look at a model: one row of samples per class, written as a PNG grid.

Used at the end of training and by ``dreamdata sample``. Samples come from ancestral DDPM
(Ho et al. 2020, Algorithm 2) on ``steps`` evenly spaced timesteps, from a seeded generator so the same
checkpoint always gives the same grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from dreamdata.sampling.ddpm import ddpm_sample
from dreamdata.sampling.grid import save_grid
from dreamdata.sampling.timesteps import timestep_sequence


@torch.no_grad()
def sample_per_class(network, process, per_class: int, steps: int, seed: int, device: torch.device,
                     guidance_scale: float = 0.0, progress: bool = False,
                     classes: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of each class (all unconditional samples for an unconditional network)."""
    num_classes = getattr(network, "num_classes", 0)
    if num_classes > 0:
        class_ids = classes if classes is not None else list(range(num_classes))
        labels = torch.tensor(class_ids, device=device).repeat_interleave(per_class)
    else:
        labels = None
    count = per_class * (len(classes) if classes is not None else max(1, num_classes))
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = (count, network.in_channels, network.image_size, network.image_size)
    noise = torch.randn(shape, generator=generator, device=device)
    was_training = network.training
    network.eval()
    timesteps = timestep_sequence(process.num_steps, min(steps, process.num_steps)).to(device)
    images = ddpm_sample(network, process, noise, timesteps=timesteps, class_labels=labels,
                         guidance_scale=guidance_scale if labels is not None else 0.0,
                         generator=generator, progress=progress)
    network.train(was_training)
    return images, labels if labels is not None else torch.zeros(count, dtype=torch.long)


def write_class_grid(network, process, path: Path, per_class: int, steps: int, seed: int, device: torch.device,
                     guidance_scale: float = 0.0, progress: bool = False) -> Path:
    """Sample ``per_class`` images per class and save them as a grid, one row per class."""
    images, _ = sample_per_class(network, process, per_class, steps, seed, device, guidance_scale, progress)
    save_grid(images, path, nrow=per_class)
    return Path(path)
