"""Conditional generation from a degraded image: degrade real images to step ``t``, run a sampler back, score it.

Works for either kind of process through the shared interface: ``process.q_sample(x0, t, noise)`` gives the
degraded state (blur ignores ``noise``; Gaussian diffusion uses it) and any sampler that fits the process
runs from index ``t`` down to 0. With blur this is Bansal et al.'s deblurring task (2022, sec. 4.1); with
Gaussian noise it is SDEdit-style reconstruction (Meng et al. 2022), informative only while
``alpha_bar_t`` is not ~0.

Scores are on images in ``[0, 1]`` (``data_range = 1``): RMSE, PSNR (per image, then averaged) and SSIM
(Wang et al. 2004, torchmetrics' Gaussian-window implementation).
"""

from __future__ import annotations

from typing import Optional

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from dreamdata.process.rng import PerSampleGenerator, per_sample_noise
from dreamdata.sampling.registry import get_sampler
from dreamdata.sampling.timesteps import timestep_sequence

__all__ = ["degrade_and_restore", "restoration_scores"]


@torch.no_grad()
def degrade_and_restore(network, process, x0: torch.Tensor, class_labels: Optional[torch.Tensor], sampler: str,
                        steps: int, seed: int, from_index: Optional[int] = None, batch_size: int = 64,
                        device: Optional[torch.device | str] = None, x0_clip: str = "static",
                        guidance_scale: float = 0.0, indices: Optional[torch.Tensor] = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(degraded, restored)`` float32 CPU tensors ``[N, C, H, W]`` in ``[-1, 1]`` for clean images ``x0``.

    ``from_index`` is the training index the images are degraded to (default ``T - 1``, fully degraded);
    the sampler then visits ``min(steps, from_index + 1)`` indices from there to 0. Image ``k``'s noise
    (Gaussian processes only) is seeded from ``(seed, indices[k])``, ``indices`` defaulting to ``0 .. N-1``.
    """
    from_index = process.num_steps - 1 if from_index is None else int(from_index)
    if not 0 <= from_index < process.num_steps:
        raise ValueError(f"from_index must lie in 0..{process.num_steps - 1}, got {from_index}")
    sample_fn = get_sampler(sampler, process)
    device = torch.device(device) if device is not None else torch.device("cpu")
    timesteps = timestep_sequence(from_index + 1, min(steps, from_index + 1)).to(device)
    indices = torch.arange(x0.shape[0]) if indices is None else torch.as_tensor(indices).flatten()
    degraded, restored = torch.empty_like(x0, dtype=torch.float32), torch.empty_like(x0, dtype=torch.float32)
    was_training = getattr(network, "training", False)
    network.eval()
    try:
        for first in range(0, x0.shape[0], batch_size):
            rows = slice(first, first + batch_size)
            clean = x0[rows].to(device=device, dtype=torch.float32)
            noise = per_sample_noise(seed, indices[rows], clean.shape[1:], device)
            state = process.q_sample(clean, torch.full((clean.shape[0],), from_index, device=device), noise)
            labels = None if class_labels is None else class_labels[rows].to(device)
            images = sample_fn(network, process, state, timesteps, class_labels=labels,
                               guidance_scale=guidance_scale, generator=PerSampleGenerator(seed, indices[rows], device),
                               x0_clip=x0_clip)
            degraded[rows] = state.float().cpu()
            restored[rows] = images.float().clamp(-1.0, 1.0).cpu()
    finally:
        network.train(was_training)
    return degraded, restored


def restoration_scores(restored: torch.Tensor, original: torch.Tensor) -> dict[str, float]:
    """Mean RMSE, PSNR (dB) and SSIM of ``restored`` against ``original`` (both ``[-1, 1]``, scored in ``[0, 1]``).

    SSIM uses an 11 x 11 Gaussian window (Wang et al. 2004), shrunk to the largest odd size that fits
    smaller images.
    """
    a = restored.double().clamp(-1, 1).add(1).div(2)
    b = original.double().clamp(-1, 1).add(1).div(2)
    rmse = (a - b).pow(2).mean(dim=(1, 2, 3)).sqrt()
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    window = min(11, min(a.shape[-2:]) - (1 - min(a.shape[-2:]) % 2))
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, kernel_size=window, reduction="none")
    return {"rmse": float(rmse.mean()), "psnr": float(psnr.mean()), "ssim": float(ssim.mean())}
