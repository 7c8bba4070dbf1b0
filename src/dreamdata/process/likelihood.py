"""The Gaussian log-densities and KL divergences the variational bound of a diffusion is made of.

Small, named helpers in the style of improved-diffusion's ``losses.py`` (Nichol & Dhariwal 2021), all
elementwise and in nats; :class:`~dreamdata.process.gaussian.GaussianDiffusion` assembles them into the
bound's terms ``L_T``, ``L_{t-1}`` and ``L_0`` (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, eq. 4-7).

The discretized decoder uses the exact normal CDF (``torch.special.log_ndtr``) rather than the reference
code's tanh approximation of it: the exact one costs the same, is accurate in the tails, and makes the
256 bin probabilities sum to 1 to rounding.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BIN_HALF_WIDTH", "discretized_gaussian_log_likelihood", "gaussian_log_likelihood", "normal_kl"]

BIN_HALF_WIDTH = 1.0 / 255.0
"""Half the width of one of the 256 bins of 8-bit pixels scaled to ``[-1, 1]`` (``x = k / 127.5 - 1``)."""


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
              ) -> torch.Tensor:
    """``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` elementwise, in nats (arguments broadcast).

    ``0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2))``: the
    closed form that makes every ``L_{t-1}`` of the bound a Rao-Blackwellised KL between Gaussians
    (Ho et al. 2020, eq. 5 and the sentence after it). Log-variances keep tiny variances exact.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """``log N(x; means, exp(log_scales)^2)`` elementwise, in nats: the continuous decoder density.

    For continuous data (e.g. the analytic Gaussian checks in the tests); images use
    :func:`discretized_gaussian_log_likelihood`.
    """
    return -0.5 * math.log(2.0 * math.pi) - log_scales - 0.5 * ((x - means) * torch.exp(-log_scales)) ** 2


def _log_normal_mass(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``log(Phi(high) - Phi(low))`` for standardised ``low < high`` (either may be infinite), in nats.

    An interval above the mean is mirrored below it (``Phi(h) - Phi(l) = Phi(-l) - Phi(-h)``) so both ends
    sit in the lower tail, where ``log_ndtr`` keeps its digits; then ``log(Phi(h) - Phi(l)) = log Phi(h) +
    log(1 - exp(log Phi(l) - log Phi(h)))``, with the second term as ``log(-expm1(.))``.
    """
    mirror = (low + high) > 0
    low, high = torch.where(mirror, -high, low), torch.where(mirror, -low, high)
    log_high = torch.special.log_ndtr(high)
    log_low = torch.special.log_ndtr(low)
    return log_high + torch.log(-torch.expm1(log_low - log_high))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
                                        ) -> torch.Tensor:
    """``log P(x)`` elementwise, in nats, of 8-bit data ``x`` in ``[-1, 1]`` under ``N(means, exp(log_scales)^2)``
    integrated over ``x``'s bin - the discretized decoder ``p(x_0 | x_1)`` of Ho et al. 2020, eq. 13.

    The 256 bins are ``[x - 1/255, x + 1/255]`` around the values ``k / 127.5 - 1``; the first bin extends to
    ``-inf`` and the last to ``+inf`` (Ho et al. 2020, eq. 13: ``delta_-(-1) = -inf``, ``delta_+(1) = +inf``),
    so the probabilities of the 256 bins sum to 1 for any mean and scale.
    """
    inv_scale = torch.exp(-log_scales)
    low = torch.where(x < -1.0 + BIN_HALF_WIDTH, torch.full_like(x, -math.inf),
                      (x - BIN_HALF_WIDTH - means) * inv_scale)
    high = torch.where(x > 1.0 - BIN_HALF_WIDTH, torch.full_like(x, math.inf),
                       (x + BIN_HALF_WIDTH - means) * inv_scale)
    return _log_normal_mass(low, high)
