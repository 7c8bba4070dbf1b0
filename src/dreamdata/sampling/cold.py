"""Cold-diffusion samplers (Bansal et al. 2022, "Cold Diffusion", sec. 3): invert a deterministic degradation.

Both work with any process that has ``num_steps`` and ``degrade(x, s)`` (``D(x, s)``: ``s`` degradation steps,
``D(x, 0) = x``), such as :class:`~dreamdata.process.blur.GaussianBlurDegradation`, and a restorer network
``R(x_s, t) ≈ x_0`` (training index ``t`` = step ``s - 1``, see :mod:`dreamdata.process.base`).

* :func:`cold_naive_sample` - Algorithm 1: ``x_{s-1} = D(R(x_s, s), s - 1)``. Each step re-degrades the
  restorer's guess; any error of ``R`` is carried to the next state in full.
* :func:`cold_improved_sample` - Algorithm 2: ``x_{s-1} = x_s - D(x̂_0, s) + D(x̂_0, s - 1)``. For a
  degradation that is linear in ``s``, ``D(x, s) = x + s e``, the update is ``x_s - e`` whatever ``x̂_0`` is,
  so it returns the true ``x_0`` even with a wrong restorer (Bansal et al., sec. 3.3); for blur it is far
  more tolerant of restorer errors than Algorithm 1.

Like the Gaussian samplers they are stateless, take the shared arguments (see
:mod:`dreamdata.sampling.registry`) and visit any strictly descending subset of training indices: between
visited indices ``t > t'`` the step uses ``D(x̂_0, t + 1)`` and ``D(x̂_0, t' + 1)`` (``D(x̂_0, 0) = x̂_0`` after
the last). They draw no random numbers; ``generator`` is accepted for the shared signature.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from dreamdata.process.base import Network
from dreamdata.process.rng import GeneratorLike
from dreamdata.sampling.common import Callback, SamplingSetup, initial_state, prepare_sampling
from dreamdata.sampling.guidance import guided_output
from dreamdata.sampling.thresholding import clip_x0

__all__ = ["cold_improved_sample", "cold_naive_sample", "restore_x0"]


def restore_x0(network: Network, x: torch.Tensor, tau: int, setup: SamplingSetup, guidance_scale: float,
               x0_clip: str) -> torch.Tensor:
    """The restorer's (guided, clipped) ``x̂_0 = R(x, tau)`` for the state ``x`` at training index ``tau``."""
    t = torch.full((x.shape[0],), tau, device=x.device, dtype=torch.long)
    x0_hat = guided_output(network, x, t, setup.class_labels, guidance_scale, setup.null_class)
    if x0_hat.shape != x.shape:
        raise ValueError(f"network output has shape {tuple(x0_hat.shape)}, expected {tuple(x.shape)}")
    return clip_x0(x0_hat, x0_clip) if x0_clip != "none" else x0_hat


def _cold_loop(improved: bool, network: Network, process, start: torch.Tensor,
               timesteps: Optional[torch.Tensor | Sequence[int]], class_labels: Optional[torch.Tensor],
               guidance_scale: float, generator: GeneratorLike, x0_clip: str, progress: bool,
               callback: Optional[Callback], null_class: Optional[int],
               guidance_interval: Optional[Sequence[float]]) -> torch.Tensor:
    # a guidance interval is in Gaussian noise levels: prepare_sampling refuses it for a blur process
    setup = prepare_sampling(network, process, start, timesteps, class_labels, guidance_scale, generator,
                             x0_clip, null_class, guidance_interval)
    x = initial_state(start)
    name = "cold-improved" if improved else "cold-naive"
    for i, tau in enumerate(tqdm(setup.steps, desc=name, disable=not progress, leave=False)):
        x0_hat = restore_x0(network, x, tau, setup, setup.guidance_scales[i], x0_clip)  # x̂_0 = R(x_s, s)
        s_now = tau + 1
        s_next = setup.steps[i + 1] + 1 if i + 1 < len(setup.steps) else 0
        if improved:
            x_next = (x - process.degrade(x0_hat, s_now)  # Bansal et al. 2022, Algorithm 2
                      + process.degrade(x0_hat, s_next))
        else:
            x_next = process.degrade(x0_hat, s_next)  # Bansal et al. 2022, Algorithm 1
        if callback is not None:
            callback(i, tau, x, x0_hat)
        x = x_next
    return x.to(start.dtype)


@torch.no_grad()
def cold_naive_sample(network: Network, process, start: torch.Tensor,
                      timesteps: Optional[torch.Tensor | Sequence[int]] = None,
                      class_labels: Optional[torch.Tensor] = None, guidance_scale: float = 0.0,
                      generator: GeneratorLike = None, x0_clip: str = "static", progress: bool = False,
                      callback: Optional[Callback] = None, null_class: Optional[int] = None, *,
                      guidance_interval: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Bansal et al.'s Algorithm 1 from ``start`` (the degraded state at ``timesteps[0]``); returns ``x_0``.

    ``timesteps=None`` visits every index ``T - 1 .. 0``. The result is the last step's ``x̂_0``.
    ``guidance_interval`` must be ``None``: a degradation has no Gaussian noise levels to select.
    """
    return _cold_loop(False, network, process, start, timesteps, class_labels, guidance_scale, generator,
                      x0_clip, progress, callback, null_class, guidance_interval)


@torch.no_grad()
def cold_improved_sample(network: Network, process, start: torch.Tensor,
                         timesteps: Optional[torch.Tensor | Sequence[int]] = None,
                         class_labels: Optional[torch.Tensor] = None, guidance_scale: float = 0.0,
                         generator: GeneratorLike = None, x0_clip: str = "static", progress: bool = False,
                         callback: Optional[Callback] = None, null_class: Optional[int] = None, *,
                         guidance_interval: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Bansal et al.'s Algorithm 2 from ``start`` (the degraded state at ``timesteps[0]``); returns ``x_0``.

    ``timesteps=None`` visits every index ``T - 1 .. 0``. The result is ``x_1 - D(x̂_0, 1) + x̂_0`` of the
    last step: it keeps whatever part of ``x_1`` the degradation cannot explain (e.g. start noise).
    ``guidance_interval`` must be ``None`` (see :func:`cold_naive_sample`).
    """
    return _cold_loop(True, network, process, start, timesteps, class_labels, guidance_scale, generator,
                      x0_clip, progress, callback, null_class, guidance_interval)
