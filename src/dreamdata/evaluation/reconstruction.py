"""Reconstruction metrics (one report's table): noise held-out images to step t, denoise back, compare.

For each bucket ``[t_low, t_high]`` of training indices:

* **ε-MSE**: ``E ||eps - eps_hat(x_t, t)||^2`` with ``t`` uniform in the bucket and ``x_t = sqrt(ab_t) x_0 +
  sqrt(1 - ab_t) eps`` (Ho et al. 2020, eq. 4 and L_simple, eq. 14) — the held-out loss, split by noise level;
* **RMSE / SSIM / PSNR** of ``x_0`` against its reconstruction: ``x_0`` noised to ``t_high`` and brought back
  with deterministic DDIM (η = 0, Song et al. 2021), on the ``[0, 1]`` pixel scale, averaged per image.
  SSIM and PSNR are torchmetrics' (Gaussian 11×11 window, data range 1).

Noise and timesteps come from per-image seeded streams, so the figures do not depend on the batch size
and never touch the global RNG.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from dreamdata.process.rng import PerSampleGenerator, per_sample_noise
from dreamdata.sampling.ddim import ddim_sample

__all__ = ["default_buckets", "reconstruction_metrics"]


def default_buckets(num_steps: int, edges: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)) -> list[tuple[int, int]]:
    """Buckets of training indices between the fractions ``edges`` of ``T``: [0, T/10), [T/10, T/4)..."""
    cuts = [round(edge * num_steps) for edge in edges]
    return [(low, high - 1) for low, high in zip(cuts[:-1], cuts[1:]) if high > low]


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def reconstruction_metrics(network, process, clean: torch.Tensor, labels: Optional[torch.Tensor] = None,
                           buckets: Optional[Sequence[tuple[int, int]]] = None, count: int = 256,
                           ddim_steps: int = 50, seed: int = 0, batch_size: int = 128,
                           device: Optional[torch.device | str] = None) -> dict:
    """Per-bucket ε-MSE and RMSE/SSIM/PSNR of DDIM reconstructions of the first ``count`` of ``clean``.

    ``clean`` is uint8 ``[N, C, H, W]``; ``labels`` (when the network is class-conditional) are passed to it
    unguided. Returns ``{"count", "ddim_steps", "buckets": [{t_low, t_high, eps_mse, rmse, ssim, psnr}]}``.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    device = torch.device(device) if device is not None else next(network.parameters()).device
    was_training = network.training
    network.eval()
    clean = clean[:count]
    conditional = int(getattr(network, "num_classes", 0)) > 0
    labels = labels[:count] if (conditional and labels is not None) else None
    buckets = list(buckets) if buckets is not None else default_buckets(process.num_steps)
    rows = []
    try:
        for low, high in buckets:
            if not 0 <= low <= high < process.num_steps:
                raise ValueError(f"bucket [{low}, {high}] outside 0..{process.num_steps - 1}")
            totals = {"eps_mse": 0.0, "rmse": 0.0, "ssim": 0.0, "psnr": 0.0}
            for begin in range(0, len(clean), batch_size):
                index = torch.arange(begin, min(begin + batch_size, len(clean)))
                x0 = clean[index].to(device).float() / 127.5 - 1.0
                y = None if labels is None else labels[index].to(device)
                noise = per_sample_noise(seed, index, x0.shape[1:], device=device)
                # ε-MSE at t uniform in the bucket (one draw per image from its own stream)
                streams = PerSampleGenerator(seed, index, device).generators
                t = torch.stack([torch.randint(low, high + 1, (), generator=g, device=device) for g in streams])
                x_t = process.q_sample(x0, t, noise)
                output = network(process.network_input(x_t, t), t, y)
                prediction, _ = process.split_output(output, x_t)  # a learned variance is not used
                _, eps_hat = process.predict_x0_and_eps(prediction, x_t, t)
                totals["eps_mse"] += float((eps_hat - noise).pow(2).mean(dim=(1, 2, 3)).sum())
                # reconstruction from t_high with deterministic DDIM
                t_high = torch.full((len(index),), high, device=device, dtype=torch.long)
                steps = torch.linspace(high, 0, min(ddim_steps, high + 1)).round().long().unique().flip(0)
                restored = ddim_sample(network, process, process.q_sample(x0, t_high, noise), steps, y, eta=0.0)
                original, restored = _to_unit(x0), _to_unit(restored)
                totals["rmse"] += float((restored - original).pow(2).mean(dim=(1, 2, 3)).sqrt().sum())
                totals["ssim"] += float(structural_similarity_index_measure(
                    restored, original, data_range=1.0, reduction="sum"))
                totals["psnr"] += float(peak_signal_noise_ratio(
                    restored, original, data_range=1.0, dim=(1, 2, 3), reduction="sum"))
            rows.append({"t_low": low, "t_high": high, **{k: v / len(clean) for k, v in totals.items()}})
    finally:
        network.train(was_training)
    return {"count": len(clean), "ddim_steps": ddim_steps, "pixel_scale": "[0, 1]", "buckets": rows}
