"""Which training timesteps a sampler visits, and the schedule of the shortened chain through them.

Sampling with fewer steps than training ("respacing", Nichol & Dhariwal 2021, sec. 4) runs the reverse
chain only through a subset ``tau_1 < ... < tau_S`` of the training indices. Because ``q(x_t | x_0)`` is
closed-form, the chain through the subset is itself a Gaussian diffusion, with betas
``beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}}`` (and ``alpha_bar_{tau_0} := 1``); its marginals
at the chosen steps are exactly the training marginals, so the network's ``(x_t, t)`` inputs keep their
meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from dreamdata.process.variance import clipped_log_posterior_variance

__all__ = ["SEARCHED", "SPACINGS", "RespacedPosterior", "check_timesteps", "respaced_betas", "respaced_posterior",
           "timestep_sequence"]


SPACINGS = ("linspace", "leading", "trailing", "quadratic", "logsnr", "quadratic-trailing")
SEARCHED = "searched"  # not a formula: the grid `dreamdata search-grid` found for one checkpoint (sampling_timesteps)


def timestep_sequence(num_train_steps: int, num_sampling_steps: int, spacing: str = "linspace",
                      alpha_bar: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``num_sampling_steps`` distinct training indices in ``0 .. T - 1``, strictly descending.

    ``spacing`` chooses which ones (``T`` = ``num_train_steps``, ``S`` = ``num_sampling_steps``):

    * ``"linspace"`` (default): ``round(linspace(0, T - 1, S))``. Always includes both ends - ``T - 1``, so
      sampling starts from (nearly) pure noise as in training, and ``0``, the least noisy step. ``S = 1``
      gives just ``[T - 1]`` (one jump from noise to the predicted ``x0``; a lone ``0`` would start
      sampling from an almost clean state).
    * ``"leading"``: DDIM's uniform skip (Song et al. 2021, sec. 4.2 and their code; diffusers' "leading"):
      ``i * (T // S)`` for ``i = 0 .. S - 1`` - the first ``S`` entries of ``range(0, T, T // S)`` - with
      offset 0. Always includes ``0`` but starts at ``(S - 1) * (T // S)``, which is below ``T - 1``: the
      first step then treats the pure-noise start as a less noisy state, the mismatch Lin et al. 2024
      point out.
    * ``"trailing"``: ``round(T - i * T / S) - 1`` for ``i = 0 .. S - 1``, i.e.
      ``round(arange(T, 0, -T / S)) - 1`` (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
      Steps Are Flawed": start sampling from the last timestep). Always starts at ``T - 1``; the last
      visited index is ``round(T / S) - 1``, from which the sampler jumps to its ``x0`` prediction.
    * ``"quadratic"``: DDIM's quadratic spacing for CIFAR-10 (Song et al. 2021, appendix D, and their code):
      ``round(linspace(0, sqrt(0.8 T), S) ** 2)``, dense near ``0`` and reaching only ``round(0.8 T)``.
      Where rounding makes neighbours collide (many steps near ``0``), the later one is moved up by one
      (and, for tiny ``T``, the top ones down to ``T - 1``) so there are still exactly ``S`` distinct
      indices.

    * ``"logsnr"``: the indices nearest to ``S`` values of ``lambda_t = log(alpha_t / sigma_t)
      = 0.5 log(alpha_bar_t / (1 - alpha_bar_t))`` evenly spaced from index ``T - 1`` to index 0 (the grid
      DPM-Solver uses, Lu et al. 2022, sec. 3.3), collisions nudged apart as for "quadratic". Needs the
      schedule's ``alpha_bar``. ``S = 1`` gives ``[T - 1]``.

    * ``"quadratic-trailing"``: ``round((T - 1) ((S - i) / S) ** 2)`` for ``i = 0 .. S - 1``: quadratic
      density as DDIM's, but from ``T - 1`` (pure noise, as "trailing"), and it never visits ``0``: the last
      visited index is ``round((T - 1) / S ** 2)`` (10 for ``S = 10``), from which the sampler jumps to its
      ``x0`` prediction. Under the cosine schedule ``sigma / alpha`` is about ``tan`` of an angle linear in
      ``t``, so "linspace" spends its last step on ``sigma / alpha`` from 0.18 to 0.009 at ``S = 10`` (and a
      network call at index 0, where the noise left is under one grey level), while this grid keeps neighbouring
      noise levels within a factor of about two down to 0.03. Collisions for large ``S`` are nudged apart as for
      "quadratic".

    ``S`` may be anything from 1 to ``T``; ``S = T`` gives every index ``T - 1 .. 0`` for every spacing.

    The first four are even (or quadratic) in the index ``t``, not in the noise level. With the linear schedule
    (T = 1000) 30% of the log-SNR range lies below ``t = 50`` (``lambda`` from 1.7 to 4.6), so a 10-20
    step grid resolves the last, fine-detail part of sampling with one or two steps, and few-step ODE
    samplers lose variance there (see ``tests/test_samplers.py``). The cosine schedule is far more even.
    """
    for name, value in (("num_train_steps", num_train_steps), ("num_sampling_steps", num_sampling_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num_sampling_steps > num_train_steps:
        raise ValueError(f"num_sampling_steps={num_sampling_steps} exceeds num_train_steps={num_train_steps}")
    if spacing == SEARCHED:
        raise ValueError("spacing 'searched' is a grid searched for one trained model (dreamdata search-grid), "
                         "not a formula: sample a run loaded with its grids")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r} (known: {', '.join(SPACINGS)}, {SEARCHED})")
    T, S = num_train_steps, num_sampling_steps
    i = torch.arange(S, dtype=torch.float64)
    if spacing == "linspace":
        if S == 1:
            return torch.tensor([T - 1], dtype=torch.long)
        ascending = torch.linspace(0, T - 1, S, dtype=torch.float64).round().long()
    elif spacing == "leading":
        ascending = torch.arange(S, dtype=torch.long) * (T // S)  # Song et al. 2021, sec. 4.2 (uniform tau)
    elif spacing == "trailing":
        ascending = ((T - i * T / S).round().long() - 1).flip(0)  # Lin et al. 2024 (trailing)
    elif spacing == "logsnr":
        if alpha_bar is None or alpha_bar.numel() != T:
            raise ValueError(f"spacing 'logsnr' needs the schedule's alpha_bar of length {T}")
        if S == 1:
            return torch.tensor([T - 1], dtype=torch.long)
        alpha_bar = alpha_bar.detach().to("cpu", torch.float64)
        lam = 0.5 * (alpha_bar.log() - torch.log1p(-alpha_bar))  # Lu et al. 2022, lambda_t (decreasing in t)
        targets = torch.linspace(float(lam[0]), float(lam[-1]), S, dtype=torch.float64)  # ascending t
        ascending = _make_distinct((lam[None, :] - targets[:, None]).abs().argmin(dim=1), T)
    elif spacing == "quadratic-trailing":
        ascending = _make_distinct(((T - 1) * ((i + 1) / S) ** 2).round().long(), T)
    else:
        grid = torch.linspace(0, (0.8 * T) ** 0.5, S, dtype=torch.float64)
        ascending = (grid ** 2).round().long()  # Song et al. 2021, app. D (quadratic tau)
        ascending = _make_distinct(ascending, T)
    return ascending.flip(0)


def _make_distinct(ascending: torch.Tensor, num_train_steps: int) -> torch.Tensor:
    """The non-decreasing ``ascending`` (length ``<= T``) nudged into strictly increasing values in ``0..T-1``.

    Forward pass: each value becomes at least its predecessor plus one; backward pass: each value at most
    ``T - 1`` and below its successor. Values that did not collide are left alone.
    """
    values = ascending.tolist()
    for k in range(1, len(values)):
        values[k] = max(values[k], values[k - 1] + 1)
    values[-1] = min(values[-1], num_train_steps - 1)
    for k in range(len(values) - 2, -1, -1):
        values[k] = min(values[k], values[k + 1] - 1)
    return torch.tensor(values, dtype=torch.long)


def check_timesteps(timesteps: torch.Tensor | Sequence[int], num_train_steps: int) -> torch.Tensor:
    """Validate a sampling sequence (non-empty, 1-D, strictly descending, within ``0..T-1``); return it on CPU."""
    steps = torch.as_tensor(timesteps).detach().to("cpu")
    if steps.ndim != 1 or steps.numel() < 1 or steps.is_floating_point():
        raise ValueError(f"timesteps must be a non-empty 1-D integer sequence, got {timesteps!r}")
    steps = steps.long()
    if steps.numel() > 1 and not bool((steps[1:] < steps[:-1]).all()):
        raise ValueError(f"timesteps must be strictly descending, got {steps.tolist()}")
    if int(steps.max()) > num_train_steps - 1 or int(steps.min()) < 0:
        raise ValueError(f"timesteps must lie in 0..{num_train_steps - 1}, got {steps.tolist()}")
    return steps


def respaced_betas(alpha_bar: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Betas ``[S]`` (ascending step order) of the chain through ``timesteps`` (any order, distinct).

    ``alpha_bar`` is the full training ``alpha_bar`` (float64 recommended: the ratios of neighbouring
    values lose precision in float32).
    """
    chosen = alpha_bar[timesteps.sort().values]
    previous = torch.cat([chosen.new_ones(1), chosen[:-1]])  # alpha_bar at the previous chosen step; 1 before the first
    return 1.0 - chosen / previous  # Nichol & Dhariwal 2021, sec. 4 (beta_t = 1 - alpha_bar_t / alpha_bar_{t-1})


@dataclass(frozen=True)
class RespacedPosterior:
    """The posterior ``q(x_{tau_{j-1}} | x_{tau_j}, x_0)`` of the chain through the chosen steps, per step
    ``j`` in ascending order (float64 ``[S]``; entry 0 is the last, least noisy step, whose variance is 0)."""

    betas: torch.Tensor  # beta'_j = 1 - alpha_bar_{tau_j} / alpha_bar_{tau_{j-1}}
    posterior_variance: torch.Tensor  # beta_tilde'_j
    posterior_log_variance_clipped: torch.Tensor  # log beta_tilde'_j, entry 0 clipped to entry 1's
    posterior_mean_coef_x0: torch.Tensor
    posterior_mean_coef_xt: torch.Tensor


def respaced_posterior(alpha_bar: torch.Tensor, timesteps: torch.Tensor) -> RespacedPosterior:
    """The respaced chain's posterior built from ``alpha_bar`` directly (never from ``1 - beta'``).

    With ``a = alpha_bar_{tau_j}`` and ``p = alpha_bar_{tau_{j-1}}`` (``p = 1`` before the first step), Ho et
    al. 2020 eq. 7 for the chain with ``beta' = 1 - a / p`` reads ``beta_tilde' = (1 - p) / (1 - a) * beta'``,
    ``mean = sqrt(p) beta' / (1 - a) * x_0 + sqrt(a / p) (1 - p) / (1 - a) * x_t``. A long jump can make
    ``beta'`` round to 1 (constant beta = 0.02, T = 2000, two steps: ``a / p = 3e-18``); a schedule derived
    from the betas then fails (``beta < 1``) or loses ``sqrt(1 - beta')``, while these forms stay exact.
    Everything is float64, with ``1 - x`` as ``-expm1(log x)`` so that values of ``alpha_bar`` near 1 keep
    their digits. A learned variance interpolates this chain's ``beta'`` and clipped ``beta_tilde'``
    (Nichol & Dhariwal 2021, sec. 4: the respaced chain is a diffusion of its own).
    """
    chosen = alpha_bar.detach().to("cpu", torch.float64)[torch.as_tensor(timesteps).sort().values]
    previous = torch.cat([chosen.new_ones(1), chosen[:-1]])  # alpha_bar_{tau_{j-1}}; 1 before the first step
    log_ratio = chosen.log() - previous.log()  # log alpha'_j
    betas = -torch.expm1(log_ratio)  # Nichol & Dhariwal 2021, sec. 4 (beta_t = 1 - alpha_bar_t / alpha_bar_{t-1})
    one_minus = -torch.expm1(chosen.log())  # 1 - alpha_bar_{tau_j}
    one_minus_previous = -torch.expm1(previous.log())  # 1 - alpha_bar_{tau_{j-1}}; 0 at j = 0
    posterior_variance = one_minus_previous / one_minus * betas  # Ho et al. 2020, eq. 7
    return RespacedPosterior(
        betas=betas,
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=clipped_log_posterior_variance(posterior_variance, betas),
        posterior_mean_coef_x0=previous.sqrt() * betas / one_minus,  # Ho et al. 2020, eq. 7
        posterior_mean_coef_xt=(0.5 * log_ratio).exp() * one_minus_previous / one_minus,  # Ho et al. 2020, eq. 7
    )
