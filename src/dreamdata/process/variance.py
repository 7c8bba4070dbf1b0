"""The reverse-step variance ``Sigma_theta(x_t, t)`` of a Gaussian diffusion: fixed, or learned in a range.

Ho et al. 2020 (sec. 3.2) fix ``Sigma = sigma_t^2 I`` at one of two extremes: ``beta_tilde_t`` (the
posterior variance, optimal when ``x_0`` is a single point: ``fixed_small``) or ``beta_t`` (optimal for
``x_0 ~ N(0, I)``: ``fixed_large``). Nichol & Dhariwal 2021 (sec. 3.1) learn it instead, as an
interpolation between the two in the log domain:

    Sigma_theta(x_t, t) = exp(v log beta_t + (1 - v) log beta_tilde_t)          (Nichol & Dhariwal 2021, eq. 15)

where ``v`` is one extra output channel per image channel (``learned_range``; the network's raw output in
``[-1, 1]`` is mapped to ``v = (raw + 1) / 2``, as in their code, and is not clamped, also as in their code).

At index 0 the posterior variance ``beta_tilde`` is 0 (``x_0`` given ``x_0`` is a point mass), so its log is
clipped to ``log beta_tilde`` at index 1; ``fixed_large`` uses that clipped value at index 0 too, as
improved-diffusion does ("to get a better decoder log likelihood"). This matters only for the decoder
``L_0`` of the bound: the samplers add no noise at their last step.

The functions here are pure and work on any chain: the training schedule's (``GaussianDiffusion``) or a
respaced one's (``sampling.timesteps.respaced_posterior``), so respaced ancestral sampling interpolates the
respaced ``beta`` and ``beta_tilde`` exactly as the full chain does.
"""

from __future__ import annotations

import torch

__all__ = ["VARIANCES", "clipped_log_posterior_variance", "fixed_large_log_variance", "learned_fraction",
           "learned_range_log_variance", "network_output_channels"]

VARIANCES = ("fixed_small", "fixed_large", "learned_range")


def network_output_channels(variance: str, image_channels: int) -> int:
    """The channels a network must output: ``2 C`` for ``learned_range`` (prediction, then ``v``), else ``C``."""
    return 2 * image_channels if variance == "learned_range" else image_channels


def clipped_log_posterior_variance(posterior_variance: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """``log beta_tilde_t`` per step, with index 0 (where ``beta_tilde`` is 0) set to index 1's value.

    A chain of one step has no index 1; ``log beta`` of its only step is used instead. As in Ho et al.'s
    reference code.
    """
    clip_source = posterior_variance[1:2] if posterior_variance.numel() > 1 else betas[:1]
    return torch.log(torch.cat([clip_source, posterior_variance[1:]]))


def fixed_large_log_variance(log_beta: torch.Tensor, log_beta_tilde_clipped: torch.Tensor) -> torch.Tensor:
    """``log beta_t`` per step, but the clipped ``log beta_tilde`` at index 0 (improved-diffusion's convention)."""
    return torch.cat([log_beta_tilde_clipped[:1], log_beta[1:]])


def learned_fraction(raw: torch.Tensor) -> torch.Tensor:
    """The interpolation weight ``v = (raw + 1) / 2`` from the network's variance channels (raw in ``[-1, 1]``)."""
    return (raw + 1.0) / 2.0


def learned_range_log_variance(raw: torch.Tensor, log_beta: torch.Tensor, log_beta_tilde_clipped: torch.Tensor
                               ) -> torch.Tensor:
    """``log Sigma_theta = v log beta + (1 - v) log beta_tilde`` (Nichol & Dhariwal 2021, eq. 15), ``v`` from ``raw``.

    ``log_beta`` and ``log_beta_tilde_clipped`` broadcast against ``raw`` (e.g. ``[B, 1, 1, 1]``).
    """
    v = learned_fraction(raw)
    return v * log_beta + (1.0 - v) * log_beta_tilde_clipped  # Nichol & Dhariwal 2021, eq. 15
