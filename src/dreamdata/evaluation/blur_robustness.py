"""Blur robustness: how well a denoiser restores test images that were Gaussian-blurred *before* noising.

One report asks whether a diffusion model can repair a degradation it never saw in training. For each
blur σ and training index t:

1. blur the clean test image x₀ with a Gaussian of std σ (σ = 0: no blur): b = G_σ * x₀;
2. noise it to t as the forward process does: x_t = √ᾱ_t b + √(1 − ᾱ_t) ε (Ho et al. 2020, eq. 4);
3. denoise from t to 0 with deterministic DDIM (η = 0, Song et al. 2021): x̂₀;
4. score x̂₀ against the *sharp* x₀ (RMSE, SSIM, PSNR on the [0, 1] scale), next to the blurred input b
   scored the same way, so "restored better than the blurred input" is one comparison.

The noise of image i is drawn from its own seeded stream (the same in every σ and t), so the table does not
depend on the batch size.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from dreamdata.process.rng import per_sample_noise
from dreamdata.sampling.ddim import ddim_sample

__all__ = ["blur_images", "blur_robustness", "image_scores"]


def blur_images(images: torch.Tensor, sigma: float, kernel_size: int = 0) -> torch.Tensor:
    """Gaussian blur of std ``sigma`` pixels (reflect padding); ``sigma = 0`` returns the images unchanged.
    ``kernel_size`` 0 means ``2 * ceil(3 sigma) + 1`` (the Gaussian's ±3σ)."""
    from torchvision.transforms.functional import gaussian_blur

    if sigma == 0:
        return images
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    size = kernel_size or 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(images, [size, size], [float(sigma), float(sigma)])


def image_scores(images: torch.Tensor, originals: torch.Tensor) -> dict[str, Optional[float]]:
    """:func:`~dreamdata.sampling.restore.restoration_scores` (RMSE, SSIM, PSNR on the [0, 1] scale), with the
    infinite PSNR of identical images reported as None (JSON has no infinity)."""
    from dreamdata.sampling.restore import restoration_scores

    scores: dict[str, Optional[float]] = dict(restoration_scores(images, originals))
    if not math.isfinite(scores["psnr"]):
        scores["psnr"] = None
    return scores


@torch.no_grad()
def blur_robustness(network, process, clean: torch.Tensor, sigmas: Sequence[float], timesteps: Sequence[int],
                    labels: Optional[torch.Tensor] = None, ddim_steps: int = 50, seed: int = 0,
                    batch_size: int = 128, kernel_size: int = 0,
                    device: Optional[torch.device | str] = None) -> list[dict]:
    """One row per (σ, t): ``{sigma, t, rmse, ssim, psnr, blurred_rmse, blurred_ssim, blurred_psnr}``.

    ``clean`` is uint8 ``[N, C, H, W]``; ``labels`` (for a class-conditional network) are passed unguided.
    ``t`` values above ``T - 1`` are refused.
    """
    device = torch.device(device) if device is not None else next(network.parameters()).device
    was_training = network.training
    network.eval()
    conditional = int(getattr(network, "num_classes", 0)) > 0
    sharp = clean.float().div(127.5).sub(1.0)
    rows = []
    try:
        for t in timesteps:
            if not 0 <= int(t) < process.num_steps:
                raise ValueError(f"blur robustness t = {t} outside 0..{process.num_steps - 1}")
            steps = torch.linspace(int(t), 0, min(ddim_steps, int(t) + 1)).round().long().unique().flip(0)
            for sigma in sigmas:
                blurred = blur_images(sharp, float(sigma), kernel_size)
                restored = []
                for begin in range(0, len(sharp), batch_size):
                    index = torch.arange(begin, min(begin + batch_size, len(sharp)))
                    b = blurred[index].to(device)
                    noise = per_sample_noise(seed, index, b.shape[1:], device=device)
                    x_t = process.q_sample(b, torch.full((len(index),), int(t), device=device), noise)
                    y = labels[index].to(device) if conditional and labels is not None else None
                    restored.append(ddim_sample(network, process, x_t, steps.to(device), y, eta=0.0).cpu())
                scores = image_scores(torch.cat(restored), sharp)
                baseline = image_scores(blurred, sharp)
                rows.append({"sigma": float(sigma), "t": int(t), **scores,
                             **{f"blurred_{key}": value for key, value in baseline.items()}})
    finally:
        network.train(was_training)
    return rows
