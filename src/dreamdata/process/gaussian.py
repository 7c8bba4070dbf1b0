"""Gaussian diffusion (DDPM): the forward process ``q(x_t | x_0)``, its posterior, the network's
parameterisations and the reverse step's variance, gathered behind one :class:`GaussianDiffusion`.

Implements the :class:`dreamdata.process.base.Process` protocol. The network may be trained to predict the
noise ``epsilon`` (Ho et al. 2020), the clean image ``x0``, the velocity ``v`` (Salimans & Ho 2022), or the
raw output ``F`` of EDM's preconditioned denoiser (``edm``, Karras et al. 2022, eq. 7 and Table 1; see
:mod:`dreamdata.process.edm`); :meth:`GaussianDiffusion.predict_x0_and_eps` turns any of them back into
``(x0_hat, eps_hat)`` so samplers never need to know which one was used. Every caller feeds the network
:meth:`GaussianDiffusion.network_input` of the state (``x_t`` itself except for ``edm``). With
``variance="learned_range"`` the network outputs ``2 C`` channels, the prediction and then the interpolation
``v`` of the reverse variance (:mod:`dreamdata.process.variance`); :meth:`GaussianDiffusion.split_output`
separates them. Training draws ``t`` uniformly or, with ``timestep_distribution="lognormal"``, from EDM's
log-normal noise levels (:mod:`dreamdata.process.lognormal`).

The process's other jobs live in their own modules, which its methods call: the terms of the variational
bound (:meth:`GaussianDiffusion.prior_kl` ``= L_T``, :meth:`GaussianDiffusion.vlb_term`;
:mod:`dreamdata.process.variational_bound`), the weighting of the MSE (``loss_weighting``;
:mod:`dreamdata.process.loss_weighting`) and the training losses ``simple`` / ``vlb`` / ``hybrid``
(``loss``; :mod:`dreamdata.process.gaussian_losses`).

Devices and precision: the schedule is kept once in float64 on the CPU (:attr:`GaussianDiffusion.schedule`);
per-timestep values next to an image ``x`` come from cached float32 copies on ``x``'s device (float64 when
``x`` is), see :mod:`dreamdata.process.table_cache`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from dreamdata.config import ProcessConfig
from dreamdata.process import variational_bound
from dreamdata.process.base import Network
from dreamdata.process.edm import EDMTables, edm_sigma, edm_tables
from dreamdata.process.gaussian_losses import LOSSES, TrainingLossTerms, training_loss_terms
from dreamdata.process.importance import LossSecondMomentSampler
from dreamdata.process.lognormal import lognormal_timesteps, nearest_log_sigma_boundaries
from dreamdata.process.loss_weighting import LOSS_WEIGHTINGS, min_snr_weight
from dreamdata.process.rng import randint, randn_like
from dreamdata.process.schedules import (
    FLOAT32_TINY,
    ScheduleTensors,
    betas_from_config,
    check_terminal_alpha_bar,
    derive_schedule,
)
from dreamdata.process.table_cache import TableCache
from dreamdata.process.variance import VARIANCES, learned_range_log_variance

__all__ = ["GaussianDiffusion", "LOSSES", "LOSS_WEIGHTINGS", "PREDICTIONS", "TIMESTEP_DISTRIBUTIONS",
           "TrainingLossTerms", "VARIANCES"]

PREDICTIONS = ("epsilon", "x0", "v", "edm")
TIMESTEP_DISTRIBUTIONS = ("uniform", "lognormal")


class GaussianDiffusion:
    """DDPM forward process ``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`` and its loss.

    Args:
        betas: ``beta_1 .. beta_T`` as a 1-D tensor (see :mod:`dreamdata.process.schedules`).
        prediction: what the network outputs - ``"epsilon"``, ``"x0"``, ``"v"`` or ``"edm"`` (the raw ``F``
            of EDM's denoiser ``D = c_skip x̂ + c_out F(c_in x̂)``; see below).
        loss_weighting: ``"simple"`` (the unweighted MSE of the prediction: Ho et al.'s L_simple, and for
            ``edm`` EDM's own weighting ``λ(σ)``) or ``"min_snr"`` (Hang et al. 2023);
            it weights the MSE of the ``simple`` and ``hybrid`` losses.
        min_snr_gamma: the ``gamma`` of Min-SNR weighting.
        variance: the reverse step's variance - ``"fixed_small"`` (``beta_tilde``), ``"fixed_large"``
            (``beta``) or ``"learned_range"`` (Nichol & Dhariwal 2021, eq. 15; the network outputs ``2 C``
            channels). See :mod:`dreamdata.process.variance`.
        loss: ``"simple"``, ``"vlb"`` or ``"hybrid"`` (see :mod:`dreamdata.process.gaussian_losses`).
        vlb_weight: ``lambda`` of the hybrid loss (Nichol & Dhariwal 2021, eq. 16: 0.001).
        importance_sampling: draw ``t`` with ``p_t ∝ sqrt(E[L_t^2])`` (loss ``"vlb"`` only; Nichol & Dhariwal
            2021, sec. 3.3); the history lives in :attr:`timestep_sampler`.
        sigma_data: ``σ_data`` of EDM's preconditioning (Karras et al. 2022, Table 1: 0.5), the assumed std
            of the images; used by ``prediction="edm"`` only.
        timestep_distribution: how training draws ``t`` - ``"uniform"`` on ``0 .. T-1`` (Ho et al. 2020) or
            ``"lognormal"``: ``ln σ ~ N(lognormal_mean, lognormal_std²)`` rounded to the nearest ``ln σ_t``
            (Karras et al. 2022, Table 1; :mod:`dreamdata.process.lognormal`). Any prediction; not with
            ``importance_sampling``.
        lognormal_mean, lognormal_std: EDM's ``P_mean`` (-1.2) and ``P_std`` (1.2).
        input_perturbation: ``gamma`` of DDPM-IP (Ning et al. 2023, "Input Perturbation Reduces Exposure Bias
            in Diffusion Models", eq. 9): training feeds the network ``sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) (ε + γ ξ)``
            with a second draw ``ξ ~ N(0, I)`` and keeps the target of ``ε`` (their 0.1). At sampling time the
            network sees its own earlier errors in ``x_t``; training on inputs a little off the forward
            process teaches it to take them. 0 (the default) is plain DDPM. Loss ``"simple"`` only.

    **EDM** (``prediction="edm"``). The VP state ``x_t`` is EDM's ``x̂ = x_t / sqrt(ᾱ_t) = x_0 + σ_t ε``
    scaled by ``sqrt(ᾱ_t)``, with ``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)``. The network is fed
    :meth:`network_input` ``= c_in x̂ = x_t / sqrt(1 - ᾱ_t + ᾱ_t σ_data²)``, the state divided by its own
    std for data of std ``σ_data`` (the exact EDM input; every caller - training, samplers, likelihood,
    reconstruction - goes through that one method). Its time input stays the index ``t``, not
    ``c_noise = ¼ ln σ_t``: our sinusoidal embeddings are calibrated to ``0 .. T-1``, and on the discrete
    grid ``σ_t`` is a strictly increasing function of ``t``, so ``t`` carries the same information (EDM's own
    VP preconditioning likewise conditions on the VP time, ``c_noise = (M - 1) t``, Table 1).
    """

    def __init__(self, betas: torch.Tensor, prediction: str = "epsilon", loss_weighting: str = "simple",
                 min_snr_gamma: float = 5.0, variance: str = "fixed_small", loss: str = "simple",
                 vlb_weight: float = 0.001, importance_sampling: bool = False, sigma_data: float = 0.5,
                 timestep_distribution: str = "uniform", lognormal_mean: float = -1.2,
                 lognormal_std: float = 1.2, input_perturbation: float = 0.0) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r} (known: {', '.join(PREDICTIONS)})")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {loss_weighting!r} (known: {', '.join(LOSS_WEIGHTINGS)})")
        if not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be positive, got {min_snr_gamma!r}")
        if variance not in VARIANCES:
            raise ValueError(f"unknown reverse variance {variance!r} (known: {', '.join(VARIANCES)})")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        if not vlb_weight > 0:
            raise ValueError(f"vlb_weight must be positive, got {vlb_weight!r}")
        if importance_sampling and loss != "vlb":
            raise ValueError(f"importance sampling of t is for loss 'vlb', not {loss!r}")
        if not (sigma_data > 0 and math.isfinite(sigma_data)):
            raise ValueError(f"sigma_data must be a positive number, got {sigma_data!r}")
        if timestep_distribution not in TIMESTEP_DISTRIBUTIONS:
            raise ValueError(f"unknown timestep distribution {timestep_distribution!r} "
                             f"(known: {', '.join(TIMESTEP_DISTRIBUTIONS)})")
        if not (lognormal_std > 0 and math.isfinite(lognormal_std) and math.isfinite(lognormal_mean)):
            raise ValueError(f"lognormal_mean must be finite and lognormal_std positive, got "
                             f"{lognormal_mean!r} and {lognormal_std!r}")
        if not 0.0 <= input_perturbation < math.inf:
            raise ValueError(f"input_perturbation must be a finite gamma >= 0, got {input_perturbation!r}")
        if input_perturbation and loss != "simple":
            raise ValueError(f"input perturbation (DDPM-IP) trains loss 'simple', not {loss!r}")
        if importance_sampling and timestep_distribution != "uniform":
            raise ValueError(f"importance sampling draws its own t; it cannot be combined with "
                             f"timestep_distribution {timestep_distribution!r}")
        self.schedule: ScheduleTensors = derive_schedule(betas)  # float64, CPU: the source of truth
        alpha_bar_T = float(self.schedule.alpha_bar[-1])
        if alpha_bar_T < FLOAT32_TINY:  # the float32 tables would hold alpha_bar = 0: NaN in every sampler
            raise ValueError(f"alpha_bar_T = {alpha_bar_T:.3g} underflows float32 (smallest normal "
                             f"{FLOAT32_TINY:.3g}); use fewer steps or smaller betas")
        self.num_steps: int = self.schedule.num_steps
        self.prediction = prediction
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self.variance = variance
        self.loss = loss
        self.vlb_weight = float(vlb_weight)
        self.sigma_data = float(sigma_data)
        self.timestep_distribution = timestep_distribution
        self.lognormal_mean, self.lognormal_std = float(lognormal_mean), float(lognormal_std)
        self.input_perturbation = float(input_perturbation)
        # few-step grids searched for the trained network this process was loaded with (step count -> descending
        # timesteps; `dreamdata search-grid`, set by load_trained): what `--spacing searched` samples on
        self.searched_grids: dict[int, list[int]] = {}
        # EDM's coefficients per index (float64, CPU), and the ln sigma_t boundaries of the log-normal draw
        self.edm: Optional[EDMTables] = (edm_tables(self.schedule.alpha_bar, self.sigma_data)
                                         if prediction == "edm" else None)
        self.log_sigma_boundaries: Optional[torch.Tensor] = (
            nearest_log_sigma_boundaries(edm_sigma(self.schedule.alpha_bar).log())
            if timestep_distribution == "lognormal" else None)
        # the only state a process has: the L_t history of importance sampling (checkpointed by the trainer)
        self.timestep_sampler: Optional[LossSecondMomentSampler] = (
            LossSecondMomentSampler(self.num_steps) if importance_sampling else None)
        self._tables: TableCache[ScheduleTensors] = TableCache(self.schedule)
        self._edm_tables: Optional[TableCache[EDMTables]] = TableCache(self.edm) if self.edm is not None else None
        self._boundaries: dict[torch.device, torch.Tensor] = {}  # float32 copies of log_sigma_boundaries

    @classmethod
    def from_config(cls, config: ProcessConfig) -> "GaussianDiffusion":
        """Build from a :class:`~dreamdata.config.ProcessConfig` (schedule, T, prediction, weighting,
        variance, loss).

        A schedule whose ``alpha_bar_T`` underflows float32 is a :class:`~dreamdata.errors.ConfigError`;
        a linear one that ends far from pure noise warns
        (:func:`~dreamdata.process.schedules.check_terminal_alpha_bar`).
        """
        betas = betas_from_config(config)
        check_terminal_alpha_bar(config, float(torch.cumprod(1.0 - betas, dim=0)[-1]))
        return cls(betas, prediction=config.prediction,
                   loss_weighting=config.loss_weighting, min_snr_gamma=config.min_snr_gamma,
                   variance=config.variance, loss=config.loss, vlb_weight=config.vlb_weight,
                   importance_sampling=config.importance_sampling, sigma_data=config.sigma_data,
                   timestep_distribution=config.timestep_distribution, lognormal_mean=config.lognormal_mean,
                   lognormal_std=config.lognormal_std, input_perturbation=config.input_perturbation)

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(num_steps={self.num_steps}, prediction={self.prediction!r}, "
                f"loss_weighting={self.loss_weighting!r}, min_snr_gamma={self.min_snr_gamma}, "
                f"variance={self.variance!r}, loss={self.loss!r}, vlb_weight={self.vlb_weight}, "
                f"importance_sampling={self.timestep_sampler is not None}, sigma_data={self.sigma_data}, "
                f"timestep_distribution={self.timestep_distribution!r}, lognormal_mean={self.lognormal_mean}, "
                f"lognormal_std={self.lognormal_std}, input_perturbation={self.input_perturbation})")

    @property
    def learned_variance(self) -> bool:
        """Whether the network outputs the variance too (``learned_range``: ``2 C`` channels)."""
        return self.variance == "learned_range"

    # -- per-timestep values next to a tensor -----------------------------------------------------

    def tables(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ScheduleTensors:
        """The schedule on ``device`` in ``dtype`` (cached; float64 CPU master in :attr:`schedule`)."""
        return self._tables.on(device, dtype)

    def _coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``schedule.<name>[t]`` on ``x``'s device, shaped to broadcast against ``x``."""
        return self._tables.at(name, t, x)

    def _edm_coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``edm.<name>[t]`` (:class:`~dreamdata.process.edm.EDMTables`) next to ``x``, as :meth:`_coef`."""
        return self._edm_tables.at(name, t, x)

    # -- forward process --------------------------------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log-variance of ``q(x_t | x_0)`` (Ho et al. 2020, eq. 4).

        The variance and log-variance are shaped ``[B, 1, ..., 1]`` (they do not depend on pixels).
        """
        mean = self._coef("sqrt_alpha_bar", t, x0) * x0  # Ho et al. 2020, eq. 4
        variance = 1.0 - self._coef("alpha_bar", t, x0)  # Ho et al. 2020, eq. 4
        log_variance = torch.log(variance)
        return mean, variance, log_variance

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Draw ``x_t ~ q(x_t | x_0)`` in closed form: ``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise``.

        ``noise`` is standard normal; when ``None`` it is drawn from torch's global RNG.
        """
        if noise is None:
            noise = randn_like(x0)
        return (self._coef("sqrt_alpha_bar", t, x0) * x0  # Ho et al. 2020, eq. 4
                + self._coef("sqrt_one_minus_alpha_bar", t, x0) * noise)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)`` (Ho et al. 2020, eq. 6-7).

        In index terms this is the distribution of the state at index ``t - 1`` (``x_0`` itself at
        ``t = 0``, where the variance is 0 and the mean is ``x0``). Variances are ``[B, 1, ..., 1]``.
        """
        mean = (self._coef("posterior_mean_coef_x0", t, x_t) * x0  # Ho et al. 2020, eq. 7
                + self._coef("posterior_mean_coef_xt", t, x_t) * x_t)
        variance = self._coef("posterior_variance", t, x_t)  # Ho et al. 2020, eq. 7
        log_variance = self._coef("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    # -- parameterisations ------------------------------------------------------------------------

    def network_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is fed for the state ``x_t`` at index ``t``: ``x_t`` itself, or for ``edm``
        EDM's ``c_in x̂ = c_in x_t / sqrt(ᾱ_t)`` (Karras et al. 2022, eq. 7 and Table 1).

        Every caller of the network (training, samplers, likelihood, reconstruction) goes through this, so
        the network sees one input convention; the network is then called as ``network(input, t, labels)``.
        """
        if self.prediction != "edm":
            return x_t
        return self._edm_coef("input_scale", t, x_t) * x_t  # Table 1: c_in x̂, x̂ = x_t / sqrt(ᾱ)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for ``x_t = q_sample(x0, t, noise)``, per :attr:`prediction`.

        ``edm``: ``F``'s effective target ``(x0 - c_skip x̂) / c_out`` with ``x̂ = x0 + σ noise`` (Karras et
        al. 2022, eq. 8 rewritten as in their appendix B.6), expanded in ``x0`` and ``noise``.
        """
        if self.prediction == "epsilon":
            return noise  # Ho et al. 2020, eq. 14 (L_simple)
        if self.prediction == "x0":
            return x0
        if self.prediction == "edm":
            return (self._edm_coef("target_x0", t, x0) * x0  # (1 - c_skip) x0 / c_out
                    - self._edm_coef("target_eps", t, x0) * noise)  # - c_skip σ noise / c_out
        return (self._coef("sqrt_alpha_bar", t, x0) * noise  # Salimans & Ho 2022, sec. 4 (v)
                - self._coef("sqrt_one_minus_alpha_bar", t, x0) * x0)

    def predict_x0_and_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a network output of any parameterisation into ``(x0_hat, eps_hat)`` (exact inverse).

        Uses ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` (Ho et al. 2020, eq. 4) and, for ``v``,
        ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0`` (Salimans & Ho 2022, sec. 4). For ``edm``,
        ``x0_hat = D = c_skip x̂ + c_out F`` (Karras et al. 2022, eq. 7) and ``eps_hat = (x̂ - D) / σ``, which
        satisfies ``x_t = sqrt(alpha_bar) x0_hat + sqrt(1 - alpha_bar) eps_hat`` by construction.
        """
        if self.prediction == "epsilon":
            eps = model_output
            x0 = (self._coef("sqrt_recip_alpha_bar", t, x_t) * x_t  # Ho et al. 2020, eq. 4 solved for x0
                  - self._coef("sqrt_recipm1_alpha_bar", t, x_t) * eps)
        elif self.prediction == "x0":
            x0 = model_output
            eps = ((x_t - self._coef("sqrt_alpha_bar", t, x_t) * x0)  # Ho et al. 2020, eq. 4 solved for eps
                   / self._coef("sqrt_one_minus_alpha_bar", t, x_t))
        elif self.prediction == "edm":
            x0 = (self._edm_coef("x0_from_xt", t, x_t) * x_t  # Karras et al. 2022, eq. 7: c_skip x̂ + c_out F
                  + self._edm_coef("c_out", t, x_t) * model_output)
            eps = (self._edm_coef("eps_from_xt", t, x_t) * x_t  # (x̂ - D) / σ = (1 - c_skip) x̂ / σ - c_out F / σ
                   - self._edm_coef("eps_from_out", t, x_t) * model_output)
        else:
            a = self._coef("sqrt_alpha_bar", t, x_t)
            b = self._coef("sqrt_one_minus_alpha_bar", t, x_t)
            x0 = a * x_t - b * model_output  # Salimans & Ho 2022, sec. 4 (x0 = alpha z - sigma v)
            eps = b * x_t + a * model_output  # Salimans & Ho 2022, sec. 4 (eps = sigma z + alpha v)
        return x0, eps

    def split_output(self, output: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(prediction, variance_output)`` of a network output for images shaped like ``x``.

        ``learned_range``: the output has ``2 C`` channels, the first ``C`` the prediction (epsilon / x0 / v)
        and the last ``C`` the raw interpolation of the variance. Otherwise it has ``C`` channels and the
        second value is ``None``. Any other shape is a ``ValueError``.
        """
        expected = (x.shape[0], 2 * x.shape[1], *x.shape[2:]) if self.learned_variance else tuple(x.shape)
        if tuple(output.shape) != expected:
            why = "the prediction and the variance channels" if self.learned_variance else "the shape of the images"
            raise ValueError(f"network output has shape {tuple(output.shape)}, expected {expected} ({why})")
        if not self.learned_variance:
            return output, None
        return output[:, :x.shape[1]], output[:, x.shape[1]:]

    # -- the reverse step p_theta(x_{t-1} | x_t) and the variational bound --------------------------

    def log_variance(self, t: torch.Tensor, x: torch.Tensor, variance_output: Optional[torch.Tensor] = None
                     ) -> torch.Tensor:
        """``log Sigma_theta(x_t, t)`` of the reverse step at index ``t``, broadcastable against ``x``.

        ``fixed_small``: ``log beta_tilde`` (clipped at index 0), ``fixed_large``: ``log beta`` (the clipped
        ``log beta_tilde`` at index 0), both ``[B, 1, ..., 1]``; ``learned_range``: Nichol & Dhariwal 2021,
        eq. 15 from ``variance_output`` (shaped like ``x``). See :mod:`dreamdata.process.variance`.
        """
        log_beta_tilde = self._coef("posterior_log_variance_clipped", t, x)
        if self.variance == "fixed_small":
            return log_beta_tilde  # Ho et al. 2020, sec. 3.2 (sigma_t^2 = beta_tilde_t)
        if self.variance == "fixed_large":
            return self._coef("fixed_large_log_variance", t, x)  # Ho et al. 2020, sec. 3.2 (sigma_t^2 = beta_t)
        if variance_output is None:
            raise ValueError("a learned_range process needs the network's variance channels")
        return learned_range_log_variance(variance_output.to(log_beta_tilde.dtype), self._coef("log_betas", t, x),
                                          log_beta_tilde)  # Nichol & Dhariwal 2021, eq. 15

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """``L_T = KL(q(x_T | x_0) || N(0, I))`` per image ``[B]``, in bits/dim (Nichol & Dhariwal 2021, eq. 7):
        :func:`dreamdata.process.variational_bound.prior_kl`."""
        return variational_bound.prior_kl(self, x0)

    def vlb_term(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, x0_hat: torch.Tensor,
                 log_variance: torch.Tensor, *, discretized: bool = True) -> torch.Tensor:
        """The bound's term at index ``t`` per image ``[B]``, in bits/dim - ``L_t`` for ``t >= 1``, the decoder
        ``L_0`` at 0 (Nichol & Dhariwal 2021, eq. 5-6) - for the model ``p_theta(x_{t-1} | x_t) =
        N(mu_tilde(x_t, x0_hat), exp(log_variance))``: :func:`dreamdata.process.variational_bound.vlb_term`."""
        return variational_bound.vlb_term(self, x0, x_t, t, x0_hat, log_variance, discretized=discretized)

    # -- training ---------------------------------------------------------------------------------

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-example float32 loss weight ``[B]`` on ``t``'s device, per :attr:`loss_weighting`: 1 for
        ``simple`` (Ho et al. 2020, eq. 14; for ``edm`` EDM's own ``λ(σ)``), Min-SNR-gamma for ``min_snr``
        (Hang et al. 2023, sec. 3.4). See :mod:`dreamdata.process.loss_weighting`.
        """
        t = torch.as_tensor(t)
        if self.loss_weighting == "simple":
            # edm: EDM's λ(σ) c_out(σ)² = 1 (eq. 8, Table 1), so its loss is this unweighted MSE on F too
            return torch.ones(t.shape, device=t.device, dtype=torch.float32)
        snr = self.tables(t.device).snr[t]
        c_out = self.edm.c_out.to(t.device, torch.float32)[t] if self.prediction == "edm" else None
        return min_snr_weight(snr, self.min_snr_gamma, self.prediction, c_out)  # Hang et al. 2023, sec. 3.4

    def sample_timesteps(self, batch_size: int, device: torch.device | str,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Training timesteps, a long tensor ``[B]`` drawn from ``generator``, per :attr:`timestep_distribution`.

        ``uniform``: ``t ~ Uniform{0, ..., T-1}`` (Ho et al. 2020, Algorithm 1). ``lognormal``: ``ln σ ~
        N(P_mean, P_std²)`` (Karras et al. 2022, Table 1) rounded to the index whose ``ln σ_t`` is nearest
        (:func:`~dreamdata.process.lognormal.lognormal_timesteps`).
        """
        if self.timestep_distribution == "uniform":
            return randint(self.num_steps, batch_size, device, generator)  # Ho et al. 2020, Algorithm 1
        device = torch.device(device)
        if device not in self._boundaries:
            self._boundaries[device] = self.log_sigma_boundaries.to(device=device, dtype=torch.float32)
        return lognormal_timesteps(self._boundaries[device], self.lognormal_mean, self.lognormal_std,
                                   batch_size, device, generator)

    def training_losses(self, network: Network, x0: torch.Tensor, class_labels: Optional[torch.Tensor],
                        generator: Optional[torch.Generator] = None, *, t: Optional[torch.Tensor] = None,
                        noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-example training loss ``[B]`` (float32) of ``network`` on ``x0``, per :attr:`loss` (``simple``,
        ``vlb`` or ``hybrid``: :func:`dreamdata.process.gaussian_losses.training_loss_terms`).

        Draws ``t`` first and then ``noise`` from ``generator`` (torch's global RNG when ``None``), in that
        order, so a caller holding a copy of the generator can reproduce both. ``t`` and ``noise`` may also
        be given explicitly (e.g. a fixed-timestep validation loss); given ones are not drawn, and a given
        ``t`` is never importance-weighted.
        """
        return self.training_loss_terms(network, x0, class_labels, generator, t=t, noise=noise).loss

    def training_loss_terms(self, network: Network, x0: torch.Tensor, class_labels: Optional[torch.Tensor],
                            generator: Optional[torch.Generator] = None, *, t: Optional[torch.Tensor] = None,
                            noise: Optional[torch.Tensor] = None) -> TrainingLossTerms:
        """:meth:`training_losses` with what the trainer needs besides the loss: ``t`` and the unweighted
        ``L_t`` that importance sampling records (:attr:`timestep_sampler`); see
        :func:`dreamdata.process.gaussian_losses.training_loss_terms`."""
        return training_loss_terms(self, network, x0, class_labels, generator, t=t, noise=noise)
