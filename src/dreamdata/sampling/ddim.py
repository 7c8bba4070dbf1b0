"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), with ``eta`` noise.

DDIM reuses a DDPM-trained network with a family of non-Markovian reverse processes indexed by ``eta``:
``eta = 0`` is deterministic (a first-order solver of the probability-flow ODE, the same as
DPM-Solver++(1)), ``eta = 1`` is the ancestral DDPM sampler with the posterior variance ``beta_tilde``.
Because every step depends on the schedule only through ``alpha_bar`` at the two visited indices, any
descending subset of training indices can be used without retraining (their sec. 4.2).

In the paper's notation ``alpha_t`` is our ``alpha_bar`` at the step's index, and ``alpha_{t-1}`` is
``alpha_bar`` at the next visited (smaller) index - or 1 after the last one, where the step lands exactly
on ``x0_hat``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from dreamdata.process.base import Network
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import GeneratorLike, randn_like
from dreamdata.sampling.common import Callback, initial_state, predict_x0_eps, prepare_sampling

__all__ = ["ddim_sample"]


@torch.no_grad()
def ddim_sample(network: Network, process: GaussianDiffusion, noise: torch.Tensor,
                timesteps: Optional[torch.Tensor | Sequence[int]] = None,
                class_labels: Optional[torch.Tensor] = None, guidance_scale: float = 0.0,
                generator: GeneratorLike = None, x0_clip: str = "static", progress: bool = False,
                callback: Optional[Callback] = None, null_class: Optional[int] = None, *,
                guidance_interval: Optional[Sequence[float]] = None, eta: float = 0.0) -> torch.Tensor:
    """Run DDIM from ``noise`` (the state at ``timesteps[0]``) and return the samples ``x_0``.

    The shared arguments (and ``guidance_interval``) are those of
    :func:`~dreamdata.sampling.ddpm.ddpm_sample`. ``eta`` in ``[0, 1]``
    scales the per-step noise (Song et al. 2021, eq. 16): 0 = deterministic DDIM (no draws from
    ``generator``), 1 = DDPM with ``beta_tilde`` (the same samples as ``ddpm_sample`` given the same
    generator, up to rounding).

    With ``x0_clip`` other than ``"none"``, ``eps_hat`` is recomputed from the clipped ``x0_hat`` (see
    :func:`~dreamdata.sampling.common.predict_x0_eps`).
    """
    if not 0.0 <= eta <= 1.0:  # also rejects NaN
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    setup = prepare_sampling(network, process, noise, timesteps, class_labels, guidance_scale, generator,
                             x0_clip, null_class, guidance_interval)
    alpha_bar = process.schedule.alpha_bar.tolist()  # float64 values: ratios near 1 need the digits
    x = initial_state(noise)
    for i, tau in enumerate(tqdm(setup.steps, desc="ddim", disable=not progress, leave=False)):
        x0_hat, eps_hat = predict_x0_eps(network, process, x, tau, setup, setup.guidance_scales[i], x0_clip)
        a_t = alpha_bar[tau]
        a_prev = alpha_bar[setup.steps[i + 1]] if i + 1 < len(setup.steps) else 1.0
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))  # Song et al. 2021, eq. 16
        direction = math.sqrt(max(1.0 - a_prev - sigma ** 2, 0.0))  # Song et al. 2021, eq. 12 (direction to x_t)
        x_next = math.sqrt(a_prev) * x0_hat + direction * eps_hat  # Song et al. 2021, eq. 12
        if sigma > 0:
            x_next = x_next + sigma * randn_like(x_next, generator)  # Song et al. 2021, eq. 12 (random noise)
        if callback is not None:
            callback(i, tau, x, x0_hat)
        x = x_next
    return x.to(noise.dtype)
