"""Gaussian diffusion (DDPM): the forward process ``q(x_t | x_0)``, its posterior, and the training loss.

Implements the :class:`dreamdata.process.base.Process` protocol. The network may be trained to predict the
noise ``epsilon`` (Ho et al. 2020), the clean image ``x0``, or the velocity ``v`` (Salimans & Ho 2022);
:meth:`GaussianDiffusion.predict_x0_and_eps` turns any of them back into ``(x0_hat, eps_hat)`` so samplers
never need to know which one was used.

Devices and precision: the schedule is kept once in float64 on the CPU (:attr:`GaussianDiffusion.schedule`).
Whenever a method needs per-timestep values next to an image ``x`` it takes them from a small cache of copies
keyed by ``(x.device, dtype)``, built on first use - so one process object serves CPU and GPU tensors
without a ``.to(device)`` call. The copies are float32, except float64 when ``x`` itself is float64 (useful
for exact checks); results keep ``x``'s dtype unless ``x`` is half precision, in which case torch's type
promotion returns float32.
"""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.config import ProcessConfig
from dreamdata.process.base import Network
from dreamdata.process.rng import randint, randn_like
from dreamdata.process.schedules import (
    FLOAT32_TINY,
    ScheduleTensors,
    betas_from_config,
    check_terminal_alpha_bar,
    derive_schedule,
)

__all__ = ["GaussianDiffusion", "PREDICTIONS", "LOSS_WEIGHTINGS"]

PREDICTIONS = ("epsilon", "x0", "v")
LOSS_WEIGHTINGS = ("simple", "min_snr")


def _extract(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Gather ``values[t]`` and shape it ``[B, 1, ..., 1]`` (``ndim`` dims) to broadcast against ``[B, ...]``.

    A 0-dim ``t`` (one timestep for the whole batch) gives ``[1, ..., 1]``.
    """
    picked = values[t]
    batch = picked.shape[0] if picked.ndim > 0 else 1
    return picked.reshape(batch, *([1] * (ndim - 1)))


class GaussianDiffusion:
    """DDPM forward process ``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`` and its loss.

    Args:
        betas: ``beta_1 .. beta_T`` as a 1-D tensor (see :mod:`dreamdata.process.schedules`).
        prediction: what the network outputs - ``"epsilon"``, ``"x0"`` or ``"v"``.
        loss_weighting: ``"simple"`` (Ho et al.'s unweighted L_simple) or ``"min_snr"`` (Hang et al. 2023).
        min_snr_gamma: the ``gamma`` of Min-SNR weighting.
    """

    def __init__(self, betas: torch.Tensor, prediction: str = "epsilon", loss_weighting: str = "simple",
                 min_snr_gamma: float = 5.0) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r} (known: {', '.join(PREDICTIONS)})")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {loss_weighting!r} (known: {', '.join(LOSS_WEIGHTINGS)})")
        if not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be positive, got {min_snr_gamma!r}")
        self.schedule: ScheduleTensors = derive_schedule(betas)  # float64, CPU: the source of truth
        alpha_bar_T = float(self.schedule.alpha_bar[-1])
        if alpha_bar_T < FLOAT32_TINY:  # the float32 tables would hold alpha_bar = 0: NaN in every sampler
            raise ValueError(f"alpha_bar_T = {alpha_bar_T:.3g} underflows float32 (smallest normal "
                             f"{FLOAT32_TINY:.3g}); use fewer steps or smaller betas")
        self.num_steps: int = self.schedule.num_steps
        self.prediction = prediction
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self._tables: dict[tuple[torch.device, torch.dtype], ScheduleTensors] = {}

    @classmethod
    def from_config(cls, config: ProcessConfig) -> "GaussianDiffusion":
        """Build from a :class:`~dreamdata.config.ProcessConfig` (schedule, T, prediction, weighting).

        A schedule whose ``alpha_bar_T`` underflows float32 is a :class:`~dreamdata.errors.ConfigError`;
        a linear one that ends far from pure noise warns
        (:func:`~dreamdata.process.schedules.check_terminal_alpha_bar`).
        """
        betas = betas_from_config(config)
        check_terminal_alpha_bar(config, float(torch.cumprod(1.0 - betas, dim=0)[-1]))
        return cls(betas, prediction=config.prediction,
                   loss_weighting=config.loss_weighting, min_snr_gamma=config.min_snr_gamma)

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(num_steps={self.num_steps}, prediction={self.prediction!r}, "
                f"loss_weighting={self.loss_weighting!r}, min_snr_gamma={self.min_snr_gamma})")

    # -- per-timestep values next to a tensor -----------------------------------------------------

    def tables(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> ScheduleTensors:
        """The schedule on ``device`` in ``dtype`` (cached; float64 CPU master in :attr:`schedule`)."""
        key = (torch.device(device), dtype)
        if key not in self._tables:
            self._tables[key] = self.schedule.to(device=key[0], dtype=dtype)
        return self._tables[key]

    def _coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``schedule.<name>[t]`` on ``x``'s device, shaped to broadcast against ``x``."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        values = getattr(self.tables(x.device, dtype), name)
        return _extract(values, torch.as_tensor(t, device=x.device), x.ndim)

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

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for ``x_t = q_sample(x0, t, noise)``, per :attr:`prediction`."""
        if self.prediction == "epsilon":
            return noise  # Ho et al. 2020, eq. 14 (L_simple)
        if self.prediction == "x0":
            return x0
        return (self._coef("sqrt_alpha_bar", t, x0) * noise  # Salimans & Ho 2022, sec. 4 (v)
                - self._coef("sqrt_one_minus_alpha_bar", t, x0) * x0)

    def predict_x0_and_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a network output of any parameterisation into ``(x0_hat, eps_hat)`` (exact inverse).

        Uses ``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` (Ho et al. 2020, eq. 4) and, for ``v``,
        ``v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0`` (Salimans & Ho 2022, sec. 4).
        """
        if self.prediction == "epsilon":
            eps = model_output
            x0 = (self._coef("sqrt_recip_alpha_bar", t, x_t) * x_t  # Ho et al. 2020, eq. 4 solved for x0
                  - self._coef("sqrt_recipm1_alpha_bar", t, x_t) * eps)
        elif self.prediction == "x0":
            x0 = model_output
            eps = ((x_t - self._coef("sqrt_alpha_bar", t, x_t) * x0)  # Ho et al. 2020, eq. 4 solved for eps
                   / self._coef("sqrt_one_minus_alpha_bar", t, x_t))
        else:
            a = self._coef("sqrt_alpha_bar", t, x_t)
            b = self._coef("sqrt_one_minus_alpha_bar", t, x_t)
            x0 = a * x_t - b * model_output  # Salimans & Ho 2022, sec. 4 (x0 = alpha z - sigma v)
            eps = b * x_t + a * model_output  # Salimans & Ho 2022, sec. 4 (eps = sigma z + alpha v)
        return x0, eps

    # -- training ---------------------------------------------------------------------------------

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-example float32 loss weight ``[B]`` on ``t``'s device.

        ``simple``: 1 (Ho et al. 2020, eq. 14). ``min_snr``: the Min-SNR-gamma weight (Hang et al. 2023,
        sec. 3.4) expressed for the network's parameterisation - with ``snr = alpha_bar / (1 - alpha_bar)``:
        ``min(snr, gamma) / snr`` for epsilon, ``min(snr, gamma)`` for x0, ``min(snr, gamma) / (snr + 1)``
        for v. Each equals ``min(snr, gamma)`` times the x0-space MSE.
        """
        t = torch.as_tensor(t)
        if self.loss_weighting == "simple":
            return torch.ones(t.shape, device=t.device, dtype=torch.float32)
        snr = self.tables(t.device).snr[t]
        clipped = snr.clamp(max=self.min_snr_gamma)  # Hang et al. 2023, sec. 3.4 (min(SNR, gamma))
        if self.prediction == "epsilon":
            return clipped / snr  # Hang et al. 2023, sec. 3.4 (epsilon: min(SNR, gamma) / SNR)
        if self.prediction == "x0":
            return clipped  # Hang et al. 2023, sec. 3.4 (x0: min(SNR, gamma))
        return clipped / (snr + 1.0)  # Hang et al. 2023, sec. 3.4 (v: min(SNR, gamma) / (SNR + 1))

    def sample_timesteps(self, batch_size: int, device: torch.device | str,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Training timesteps ``t ~ Uniform{0, ..., T-1}``, a long tensor ``[B]`` drawn from ``generator``."""
        return randint(self.num_steps, batch_size, device, generator)

    def training_losses(self, network: Network, x0: torch.Tensor, class_labels: Optional[torch.Tensor],
                        generator: Optional[torch.Generator] = None, *, t: Optional[torch.Tensor] = None,
                        noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-example weighted MSE ``[B]`` (float32) between ``network(x_t, t, labels)`` and its target.

        Draws ``t`` first and then ``noise`` from ``generator`` (torch's global RNG when ``None``), in that
        order, so a caller holding a copy of the generator can reproduce both. ``t`` and ``noise`` may also
        be given explicitly (e.g. a fixed-timestep validation loss); given ones are not drawn.
        The MSE is averaged over all non-batch dimensions and computed in float32 even under autocast.
        """
        batch = x0.shape[0]
        if t is None:
            t = self.sample_timesteps(batch, x0.device, generator)
        if noise is None:
            noise = randn_like(x0, generator)
        x_t = self.q_sample(x0, t, noise)
        output = network(x_t, t, class_labels)
        if output.shape != x0.shape:
            raise ValueError(f"network output has shape {tuple(output.shape)}, expected {tuple(x0.shape)} "
                             f"(the shape of the images)")
        target = self.training_target(x0, noise, t)
        mse = (output.float() - target.float()).pow(2).mean(dim=tuple(range(1, x0.ndim)))
        return mse * self.loss_weight(t).to(mse.device)
