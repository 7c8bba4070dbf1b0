"""The GAN "sampler": one forward pass of the generator, ``x = G(z, y)``.

It has the samplers' shared signature (:mod:`dreamdata.sampling.registry`) so ``sample``, ``evaluate``,
``dream``, ``interpolate`` and the sweep treat a GAN run like a diffusion run: ``start`` is the batch's
latent codes ``z`` (drawn per sample by :func:`~dreamdata.sampling.generate` from the generator's
``start_shape``), and the single "timestep" is ignored. Guidance does not exist for a GAN and is refused.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch


@torch.no_grad()
def gan_sample(network, process, start: torch.Tensor, timesteps: torch.Tensor,
               class_labels: Optional[torch.Tensor] = None, guidance_scale: float = 0.0,
               generator=None, x0_clip: str = "static", progress: bool = False,
               callback: Optional[Callable] = None, null_class=None, *,
               guidance_interval=None) -> torch.Tensor:
    """``G(z, y)`` for the codes ``start`` ``[B, latent_dim]``; ``callback(0, 0, x, x)`` once, as the
    multi-step samplers call it after each step (so trajectory hooks see the single step)."""
    if guidance_scale != 0:
        raise ValueError(f"guidance_scale={guidance_scale:g}: a GAN has no classifier-free guidance; use 0")
    if guidance_interval is not None:
        raise ValueError(f"guidance_interval={guidance_interval!r}: a GAN has no classifier-free guidance; use None")
    images = network(start, class_labels)
    if callback is not None:
        callback(0, 0, images, images)
    return images
