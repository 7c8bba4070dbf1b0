"""Class-balanced samples of a trained run, drawn for evaluation."""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.sampling.generate import generate
from dreamdata.sampling.saving import to_uint8
from dreamdata.evaluation.suite import ImageSet

__all__ = ["balanced_labels", "sample_for_evaluation"]


def balanced_labels(count: int, num_classes: int) -> Optional[torch.Tensor]:
    """Sample ``k`` gets class ``k mod K``: every class equally often (to within one), ``None`` if
    unconditional."""
    return torch.arange(count) % num_classes if num_classes > 0 else None


def sample_for_evaluation(network, process, class_names: list[str], count: int, seed: int = 0,
                          sampler: str = "ddim", steps: int = 50, spacing: str = "linspace",
                          guidance_scale: float = 0.0, batch_size: int = 256,
                          device: Optional[torch.device] = None, progress: bool = True, start=None,
                          source: Optional[str] = None) -> ImageSet:
    """``count`` uint8 samples (sample ``k`` seeded from ``(seed, k)``, class ``k mod K``); ``start`` is the
    start-state sampler of processes that do not start from N(0, I) (cold diffusion's blur prior)."""
    num_classes = int(getattr(network, "num_classes", 0))
    labels = balanced_labels(count, num_classes)
    images = generate(network, process, labels, count, seed, sampler=sampler, steps=steps, spacing=spacing,
                      guidance_scale=guidance_scale, batch_size=batch_size, device=device, progress=progress,
                      start=start, source=source)
    description = f"{count} samples, {sampler} {steps} steps" + (f", w={guidance_scale:g}" if num_classes else "")
    return ImageSet(to_uint8(images), labels, list(class_names) if num_classes else [], description)
