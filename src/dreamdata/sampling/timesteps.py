"""Which training timesteps a sampler visits, and the schedule of the shortened chain through them.

Sampling with fewer steps than training ("respacing", Nichol & Dhariwal 2021, sec. 4) runs the reverse
chain only through a subset ``tau_1 < ... < tau_S`` of the training indices. Because ``q(x_t | x_0)`` is
closed-form, the chain through the subset is itself a Gaussian diffusion, with betas
``beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}}`` (and ``alpha_bar_{tau_0} := 1``); its marginals
at the chosen steps are exactly the training marginals, so the network's ``(x_t, t)`` inputs keep their
meaning.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_timesteps", "respaced_betas", "timestep_sequence"]


def timestep_sequence(num_train_steps: int, num_sampling_steps: int) -> torch.Tensor:
    """``num_sampling_steps`` evenly spaced training indices, descending from ``T - 1`` to ``0``.

    Spacing rule ("linspace, rounded"): ``round(linspace(0, T - 1, S))``, reversed. It always includes both
    ends - ``T - 1``, so sampling starts from (nearly) pure noise as in training, and ``0``, the least noisy
    step - and the values are distinct whenever ``S <= T``. ``S = T`` gives every index; ``S = 1`` gives
    just ``[T - 1]`` (one jump from noise to the predicted ``x0``; the "trailing" choice, since a lone
    ``0`` would start sampling from an almost clean state).
    """
    for name, value in (("num_train_steps", num_train_steps), ("num_sampling_steps", num_sampling_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num_sampling_steps > num_train_steps:
        raise ValueError(f"num_sampling_steps={num_sampling_steps} exceeds num_train_steps={num_train_steps}")
    if num_sampling_steps == 1:
        return torch.tensor([num_train_steps - 1], dtype=torch.long)
    ascending = torch.linspace(0, num_train_steps - 1, num_sampling_steps, dtype=torch.float64).round().long()
    return ascending.flip(0)


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
