"""The terms of a Gaussian diffusion's variational bound, per image and in bits per dimension.

The bound (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, eq. 4-7):

    L_vlb = L_0 + L_1 + ... + L_{T-1} + L_T                        (iDDPM eq. 4)
    L_0     = -log p_theta(x_0 | x_1), a discretized decoder         (iDDPM eq. 5; Ho et al. eq. 13)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))    (iDDPM eq. 6)
    L_T     = KL(q(x_T | x_0) || N(0, I))                            (iDDPM eq. 7)

:func:`prior_kl` is ``L_T``, :func:`vlb_term` the others. In index terms (see :mod:`dreamdata.process.base`)
the term at index ``t >= 1`` is the paper's ``L_t`` and the one at index 0 the decoder ``L_0``.

Each term reads the process's forward marginal and posterior
(:meth:`~dreamdata.process.gaussian.GaussianDiffusion.q_mean_variance`,
:meth:`~dreamdata.process.gaussian.GaussianDiffusion.q_posterior`) and combines the elementwise Gaussian
helpers of :mod:`dreamdata.process.likelihood`; :class:`~dreamdata.process.gaussian.GaussianDiffusion`
exposes them as its methods of the same names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from dreamdata.process.likelihood import discretized_gaussian_log_likelihood, gaussian_log_likelihood, normal_kl

if TYPE_CHECKING:
    from dreamdata.process.gaussian import GaussianDiffusion

__all__ = ["bits_per_dim", "prior_kl", "vlb_term"]


def bits_per_dim(nats: torch.Tensor) -> torch.Tensor:
    """Per-image mean over the non-batch dimensions of elementwise nats, in bits (``/ ln 2``): bits/dim."""
    return nats.mean(dim=tuple(range(1, nats.ndim))) / math.log(2.0)


def prior_kl(process: GaussianDiffusion, x0: torch.Tensor) -> torch.Tensor:
    """``L_T = KL(q(x_T | x_0) || N(0, I))`` per image ``[B]``, in bits/dim (Ho et al. 2020, eq. 5;
    Nichol & Dhariwal 2021, eq. 7).

    Has no parameters; small when ``alpha_bar_T`` is ~0, and the part of the bound a schedule that
    ends short of pure noise pays for it.
    """
    t = torch.full((x0.shape[0],), process.num_steps - 1, device=x0.device, dtype=torch.long)
    mean, _, log_variance = process.q_mean_variance(x0, t)  # Ho et al. 2020, eq. 4
    kl = normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(log_variance))
    return bits_per_dim(kl)


def vlb_term(process: GaussianDiffusion, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
             x0_hat: torch.Tensor, log_variance: torch.Tensor, *, discretized: bool = True) -> torch.Tensor:
    """The bound's term at index ``t`` per image ``[B]``, in bits/dim, for the model
    ``p_theta(x_{t-1} | x_t) = N(mu_tilde(x_t, x0_hat), exp(log_variance))``.

    * ``t >= 1``: ``L_t = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))``, a KL between Gaussians
      (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, eq. 6);
    * ``t = 0``: ``L_0 = -log p_theta(x_0 | x_1)``, the discretized Gaussian decoder over 256 bins (Ho et
      al. 2020, eq. 13; Nichol & Dhariwal 2021, eq. 5), or with ``discretized=False`` the continuous
      Gaussian density (for continuous data, e.g. analytic checks).

    The model's mean is the posterior mean at ``x0_hat`` (Ho et al. 2020, eq. 7), which is how every
    parameterisation defines ``mu_theta``; at index 0 that mean is ``x0_hat`` itself.
    """
    true_mean, _, true_log_variance = process.q_posterior(x0, x_t, t)  # Ho et al. 2020, eq. 6-7
    model_mean, _, _ = process.q_posterior(x0_hat, x_t, t)  # Ho et al. 2020, eq. 7 at x0_hat
    kl = bits_per_dim(normal_kl(true_mean, true_log_variance, model_mean, log_variance))  # eq. 6
    likelihood = discretized_gaussian_log_likelihood if discretized else gaussian_log_likelihood
    decoder_nll = bits_per_dim(-likelihood(x0, model_mean, 0.5 * log_variance))  # iDDPM eq. 5
    return torch.where(torch.as_tensor(t, device=x0.device) == 0, decoder_nll, kl)
