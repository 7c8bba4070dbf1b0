"""The training losses of a Gaussian diffusion (``loss``), computed for one batch.

* ``simple``: ``L_simple`` (Ho et al. 2020, eq. 14), the MSE between the network's prediction and its
  target, weighted per timestep by ``loss_weighting`` (:mod:`dreamdata.process.loss_weighting`);
* ``vlb``: ``T L_t`` at a uniform or importance-sampled ``t`` (:mod:`dreamdata.process.importance`), an
  unbiased estimate of ``L_vlb - L_T`` (:mod:`dreamdata.process.variational_bound`);
* ``hybrid``: ``L_simple + lambda L_vlb`` with the mean frozen inside ``L_vlb`` (Nichol & Dhariwal 2021,
  eq. 16 and sec. 3.1), so the bound trains only the learned variance.

:meth:`~dreamdata.process.gaussian.GaussianDiffusion.training_losses` and
:meth:`~dreamdata.process.gaussian.GaussianDiffusion.training_loss_terms` are these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional

import torch

from dreamdata.process.base import Network
from dreamdata.process.rng import randn_like

if TYPE_CHECKING:
    from dreamdata.process.gaussian import GaussianDiffusion

__all__ = ["LOSSES", "TrainingLossTerms", "training_loss_terms", "weighted_mse"]

LOSSES = ("simple", "vlb", "hybrid")


class TrainingLossTerms(NamedTuple):
    """What :meth:`GaussianDiffusion.training_loss_terms` computed for one batch (each ``[B]``, float32)."""

    t: torch.Tensor  # the timesteps used (long)
    loss: torch.Tensor  # the training loss, importance-weighted when t was importance-sampled
    vlb: Optional[torch.Tensor]  # L_t in bits/dim (None for loss "simple"), unweighted: what the sampler records


def training_loss_terms(process: GaussianDiffusion, network: Network, x0: torch.Tensor,
                        class_labels: Optional[torch.Tensor], generator: Optional[torch.Generator] = None, *,
                        t: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None
                        ) -> TrainingLossTerms:
    """The training loss ``[B]`` (float32) of ``network`` on ``x0`` per ``process.loss``, with what the trainer
    needs besides it: ``t`` and the unweighted ``L_t`` that importance sampling records
    (:attr:`~dreamdata.process.gaussian.GaussianDiffusion.timestep_sampler`).

    ``simple``: the weighted MSE between ``network(network_input(x_t, t), t, labels)`` (its prediction
    channels) and the target (:func:`weighted_mse`); with ``process.input_perturbation = γ > 0`` the network's
    ``x_t`` is made from ``noise + γ ξ`` while the target keeps ``noise`` (DDPM-IP, Ning et al. 2023, eq. 9).
    ``vlb``: ``T L_t`` in bits/dim (an unbiased estimate of ``L_0 + ... + L_{T-1}`` for uniform ``t``), times
    ``1 / (T p_t)`` when ``t`` is importance-sampled.
    ``hybrid``: ``L_simple + lambda T L_t`` with ``x0_hat`` (hence the mean) detached inside ``L_t``, so the
    bound trains only the variance (Nichol & Dhariwal 2021, sec. 3.1: ``L_simple`` is the mean's objective).
    ``T L_t`` is the paper's one-sample estimate of ``L_vlb``, so ``lambda = 0.001`` weighs it as their
    eq. 16 does.

    Draws ``t`` first, then ``noise``, then (with input perturbation) ``ξ`` from ``generator`` (torch's global
    RNG when ``None``), in that order, so a caller holding a copy of the generator can reproduce them. ``t``
    and ``noise`` may also be given explicitly (e.g. a fixed-timestep validation loss); given ones are not
    drawn, and a given ``t`` is never importance-weighted. The MSE is averaged over all non-batch dimensions
    and computed in float32 even under autocast.
    """
    batch = x0.shape[0]
    importance_weights = None
    if t is None:
        if process.timestep_sampler is not None:
            t, importance_weights = process.timestep_sampler.sample(batch, x0.device, generator)
        else:
            t = process.sample_timesteps(batch, x0.device, generator)
    if noise is None:
        noise = randn_like(x0, generator)
    gamma = process.input_perturbation
    # DDPM-IP (Ning et al. 2023, eq. 9): y_t = sqrt(ab) x0 + sqrt(1 - ab) (eps + gamma xi), the target still eps
    x_t = process.q_sample(x0, t, noise + gamma * randn_like(x0, generator) if gamma else noise)
    prediction, variance_output = process.split_output(network(process.network_input(x_t, t), t, class_labels),
                                                       x0)
    if process.loss == "simple":
        return TrainingLossTerms(t, weighted_mse(process, prediction, x0, noise, t), None)
    prediction, x0_f, x_t_f = prediction.float(), x0.float(), x_t.float()
    if variance_output is not None:
        variance_output = variance_output.float()
    frozen = prediction.detach() if process.loss == "hybrid" else prediction  # Nichol & Dhariwal 2021, sec. 3.1
    x0_hat, _ = process.predict_x0_and_eps(frozen, x_t_f, t)
    vlb = process.vlb_term(x0_f, x_t_f, t, x0_hat, process.log_variance(t, x_t_f, variance_output))
    estimate = process.num_steps * vlb  # one-sample estimate of L_0 + ... + L_{T-1}
    if process.loss == "vlb":
        loss = estimate if importance_weights is None else estimate * importance_weights
    else:
        loss = weighted_mse(process, prediction, x0, noise, t) + process.vlb_weight * estimate  # iDDPM eq. 16
    return TrainingLossTerms(t, loss, vlb.detach())


def weighted_mse(process: GaussianDiffusion, prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                 t: torch.Tensor) -> torch.Tensor:
    """L_simple per example (Ho et al. 2020, eq. 14), weighted by ``process.loss_weight``, float32."""
    target = process.training_target(x0, noise, t)
    mse = (prediction.float() - target.float()).pow(2).mean(dim=tuple(range(1, x0.ndim)))
    return mse * process.loss_weight(t).to(mse.device)
