"""Noise schedules ``beta_1 .. beta_T`` and the quantities a Gaussian diffusion derives from them.

The schedule functions are pure: they take numbers and return a float64 tensor ``[T]`` whose entry ``i``
is the paper's ``beta_{i+1}`` (index convention of :mod:`dreamdata.process.base`). Everything is computed
in float64 because ``1 - alpha_bar`` and ratios of ``alpha_bar`` lose most of their digits in float32 at
the ends of the schedule; callers cast to float32 when they move values next to images.

References: Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM);
Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models".
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import torch

from dreamdata.config import ProcessConfig
from dreamdata.errors import ConfigError
from dreamdata.process.variance import clipped_log_posterior_variance, fixed_large_log_variance

__all__ = [
    "FLOAT32_TINY",
    "ScheduleTensors",
    "ScheduleWarning",
    "TERMINAL_ALPHA_BAR_WARNING",
    "betas_from_config",
    "check_terminal_alpha_bar",
    "constant_betas",
    "cosine_betas",
    "derive_schedule",
    "linear_betas",
    "validate_betas",
]


# The smallest normal float32. Samplers divide by sqrt(alpha_bar) in float32 (next to the images); below
# this alpha_bar is subnormal or 0 there, and x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) is inf/NaN.
FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)
# A terminal alpha_bar above this leaves visible signal in x_T: q(x_T | x_0) is then not N(0, I), the
# distribution sampling starts from (Lin et al. 2024, sec. 3.1; DDPM's linear schedule at T = 1000: 4e-5).
TERMINAL_ALPHA_BAR_WARNING = 1e-3


class ScheduleWarning(UserWarning):
    """A noise schedule that works, but not as a diffusion should (e.g. x_T is not pure noise)."""


def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")


def _check_beta(name: str, beta: float) -> None:
    if not (0.0 < beta < 1.0):  # also rejects NaN
        raise ValueError(f"{name} must lie in (0, 1), got {beta!r}")


def validate_betas(betas: torch.Tensor) -> torch.Tensor:
    """Check ``betas`` is a non-empty 1-D tensor with every entry in (0, 1); return it as float64."""
    betas = torch.as_tensor(betas)
    if betas.ndim != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    betas = betas.detach().to(device="cpu", dtype=torch.float64)
    bad = ~((betas > 0) & (betas < 1))
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ValueError(f"betas must lie in (0, 1); beta at index {index} is {betas[index].item()!r}")
    return betas


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linearly spaced ``beta_1 .. beta_T`` from ``beta_start`` to ``beta_end`` (Ho et al. 2020, sec. 4).

    The DDPM defaults (1e-4, 0.02) are tuned for T = 1000; with fewer steps the total noise
    ``prod(1 - beta)`` no longer reaches ~0, which is why improved-DDPM rescales or uses the cosine schedule.
    """
    _check_num_steps(num_steps)
    _check_beta("beta_start", beta_start)
    _check_beta("beta_end", beta_end)
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)  # Ho et al. 2020, sec. 4


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2``.

    ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}``, clipped at ``max_beta`` so the last steps are not
    singular (Nichol & Dhariwal 2021, eq. 17 and sec. 3.2). Until the clip bites, the cumulative product of
    ``1 - beta`` reproduces ``f(t) / f(0)`` exactly.
    """
    _check_num_steps(num_steps)
    if not (s >= 0.0 and math.isfinite(s)):
        raise ValueError(f"cosine offset s must be a finite number >= 0, got {s!r}")
    _check_beta("max_beta", max_beta)
    steps = torch.arange(num_steps + 1, dtype=torch.float64)  # paper steps 0 .. T
    f = torch.cos(((steps / num_steps + s) / (1 + s)) * (math.pi / 2)) ** 2  # Nichol & Dhariwal 2021, eq. 17
    alpha_bar = f / f[0]  # Nichol & Dhariwal 2021, eq. 17
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]  # Nichol & Dhariwal 2021, sec. 3.2 (beta_t from alpha_bar)
    return betas.clamp(max=max_beta)  # Nichol & Dhariwal 2021, sec. 3.2 (clip at 0.999)


def constant_betas(num_steps: int, beta: float = 0.02) -> torch.Tensor:
    """The same ``beta`` at every step (a simple baseline; Sohl-Dickstein et al. 2015 style)."""
    _check_num_steps(num_steps)
    _check_beta("constant beta", beta)
    return torch.full((num_steps,), float(beta), dtype=torch.float64)


def betas_from_config(config: ProcessConfig) -> torch.Tensor:
    """The float64 ``betas`` that ``config.schedule`` names, with the config's parameters."""
    if config.schedule == "linear":
        return linear_betas(config.num_steps, config.beta_start, config.beta_end)
    if config.schedule == "cosine":
        return cosine_betas(config.num_steps, s=config.cosine_s)
    if config.schedule == "constant":
        return constant_betas(config.num_steps, config.constant_beta)
    raise ValueError(f"unknown noise schedule {config.schedule!r} (known: linear, cosine, constant)")


def _what_to_change(config: ProcessConfig) -> tuple[str, str]:
    """The keys that set ``alpha_bar_T`` for ``config.schedule``, and how it depends on them."""
    if config.schedule == "constant":
        return (f"process.schedule=constant, process.constant_beta={config.constant_beta:g}, "
                f"process.num_steps={config.num_steps}", "alpha_bar_T = (1 - constant_beta) ** num_steps")
    return (f"process.schedule={config.schedule}, process.beta_start={config.beta_start:g}, "
            f"process.beta_end={config.beta_end:g}, process.num_steps={config.num_steps}",
            "alpha_bar_T = prod(1 - beta_t)")


def check_terminal_alpha_bar(config: ProcessConfig, alpha_bar_T: float) -> None:
    """Refuse a schedule whose float32 ``alpha_bar`` underflows; warn when a linear one ends short of noise.

    ``alpha_bar_T`` is the float64 value at the last step (``alpha_bar`` decreases, so it is the smallest).
    Raises :class:`~dreamdata.errors.ConfigError` naming the keys when ``alpha_bar_T`` is below the smallest
    normal float32 (sampling would give NaN); warns (:class:`ScheduleWarning`) when a linear schedule's
    ``alpha_bar_T`` exceeds :data:`TERMINAL_ALPHA_BAR_WARNING`.
    """
    keys, formula = _what_to_change(config)
    if alpha_bar_T < FLOAT32_TINY:
        if config.schedule == "constant":
            longest = math.floor(math.log(FLOAT32_TINY) / math.log1p(-config.constant_beta))
            change = (f"lower process.constant_beta or process.num_steps (with constant_beta="
                      f"{config.constant_beta:g}, num_steps <= {longest})")
        else:
            change = "lower process.num_steps or process.beta_end, or use process.schedule=cosine"
        raise ConfigError(
            f"{keys} gives alpha_bar_T = {alpha_bar_T:.3g} ({formula}), which underflows float32 "
            f"(smallest normal {FLOAT32_TINY:.3g}): sampling divides by sqrt(alpha_bar) and would give NaN; "
            f"{change} so that alpha_bar_T stays above {FLOAT32_TINY:.2g}")
    if config.schedule == "linear" and alpha_bar_T > TERMINAL_ALPHA_BAR_WARNING:
        warnings.warn(
            f"{keys} gives alpha_bar_T = {alpha_bar_T:.3g} > {TERMINAL_ALPHA_BAR_WARNING:g}: x_T keeps "
            f"{math.sqrt(alpha_bar_T):.2g} of the image, so it is not N(0, I), the noise sampling starts from; "
            "the DDPM betas (1e-4 .. 0.02) are tuned for T = 1000 - raise process.num_steps or process.beta_end, "
            "or use process.schedule=cosine", ScheduleWarning, stacklevel=3)


@dataclass(frozen=True, eq=False)
class ScheduleTensors:
    """Per-timestep quantities of a Gaussian diffusion, each a tensor ``[T]`` indexed by ``t`` in 0..T-1.

    Entry ``t`` refers to the paper's step ``t + 1``; ``alpha_bar_prev[t]`` is the paper's
    ``alpha_bar_t`` (so ``alpha_bar_prev[0] = 1``, the clean image).
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor
    sqrt_alpha_bar: torch.Tensor
    sqrt_one_minus_alpha_bar: torch.Tensor
    sqrt_recip_alpha_bar: torch.Tensor
    sqrt_recipm1_alpha_bar: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    log_betas: torch.Tensor
    fixed_large_log_variance: torch.Tensor
    posterior_mean_coef_x0: torch.Tensor
    posterior_mean_coef_xt: torch.Tensor
    snr: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ScheduleTensors":
        """A copy with every tensor moved to ``device`` and/or cast to ``dtype``."""
        return ScheduleTensors(**{f.name: getattr(self, f.name).to(device=device, dtype=dtype)
                                  for f in dataclasses.fields(self)})


def derive_schedule(betas: torch.Tensor) -> ScheduleTensors:
    """Everything a DDPM needs from ``betas``, computed in float64 on the CPU.

    ``posterior_variance`` is ``beta_tilde`` of Ho et al. eq. 7; it is 0 at ``t = 0`` (the posterior
    of ``x_0`` given ``x_0`` is a point mass), so its log is clipped by repeating ``beta_tilde`` at
    ``t = 1``, as in Ho et al.'s reference code. With a single step there is no ``beta_tilde`` at
    ``t = 1`` and ``log beta_1`` is used instead. ``fixed_large_log_variance`` is ``log beta`` with that
    clipped value at ``t = 0`` (see :mod:`dreamdata.process.variance`).
    """
    betas = validate_betas(betas)
    alphas = 1.0 - betas  # Ho et al. 2020, sec. 2 (alpha_t := 1 - beta_t)
    alpha_bar = torch.cumprod(alphas, dim=0)  # Ho et al. 2020, sec. 2 (alpha_bar_t := prod_s alpha_s)
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])  # alpha_bar_0 := 1
    one_minus_alpha_bar = 1.0 - alpha_bar
    posterior_variance = (1.0 - alpha_bar_prev) / one_minus_alpha_bar * betas  # Ho et al. 2020, eq. 7
    posterior_log_variance_clipped = clipped_log_posterior_variance(posterior_variance, betas)
    log_betas = torch.log(betas)
    return ScheduleTensors(
        betas=betas,
        alphas=alphas,
        alpha_bar=alpha_bar,
        alpha_bar_prev=alpha_bar_prev,
        sqrt_alpha_bar=alpha_bar.sqrt(),  # Ho et al. 2020, eq. 4 (mean of q(x_t | x_0))
        sqrt_one_minus_alpha_bar=one_minus_alpha_bar.sqrt(),  # Ho et al. 2020, eq. 4 (std of q(x_t | x_0))
        sqrt_recip_alpha_bar=(1.0 / alpha_bar).sqrt(),  # Ho et al. 2020, eq. 4 solved for x_0
        sqrt_recipm1_alpha_bar=(1.0 / alpha_bar - 1.0).sqrt(),  # Ho et al. 2020, eq. 4 solved for x_0
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=posterior_log_variance_clipped,
        log_betas=log_betas,
        fixed_large_log_variance=fixed_large_log_variance(log_betas, posterior_log_variance_clipped),
        posterior_mean_coef_x0=betas * alpha_bar_prev.sqrt() / one_minus_alpha_bar,  # Ho et al. 2020, eq. 7
        posterior_mean_coef_xt=alphas.sqrt() * (1.0 - alpha_bar_prev) / one_minus_alpha_bar,  # Ho et al. 2020, eq. 7
        snr=alpha_bar / one_minus_alpha_bar,  # Kingma et al. 2021 (VDM): SNR = alpha^2 / sigma^2
    )
