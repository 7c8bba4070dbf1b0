"""Log-normal training noise levels on a discrete schedule (Karras et al. 2022, Table 1, "Training").

EDM trains at noise levels ``ln σ ~ N(P_mean, P_std²)`` with ``P_mean = -1.2`` and ``P_std = 1.2``: most
of the effort goes to the middle noise levels (``σ`` around ``e^-1.2 ≈ 0.3``), where EDM's loss analysis
(their sec. 5, Fig. 5a) finds the network can still reduce the loss, and little to the extremes, where the
loss can hardly be reduced (tiny ``σ``: the image is given; huge ``σ``: only the data mean can be guessed).

A discrete VP process has only the noise levels ``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)`` of its indices
``t = 0 .. T-1``. :func:`lognormal_timesteps` draws ``ln σ`` and rounds it to the index whose ``ln σ_t``
is nearest (the boundaries are the midpoints between neighbouring ``ln σ_t``), so draws below ``σ_0`` land
on 0 and draws above ``σ_{T-1}`` on ``T - 1``. The distribution of ``ln σ_t`` is then the log-normal one
discretised onto the schedule's grid, and clipped to its range.
"""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.process.rng import randn

__all__ = ["lognormal_timesteps", "nearest_log_sigma_boundaries"]


def nearest_log_sigma_boundaries(log_sigma: torch.Tensor) -> torch.Tensor:
    """The ``T - 1`` midpoints ``(ln σ_t + ln σ_{t+1}) / 2`` of a strictly increasing ``ln σ_t`` table ``[T]``.

    ``torch.searchsorted(boundaries, v)`` is then the index whose ``ln σ_t`` is nearest to ``v``.
    """
    if log_sigma.ndim != 1 or not bool((log_sigma[1:] > log_sigma[:-1]).all()):
        raise ValueError("ln sigma_t must be a strictly increasing 1-D table (alpha_bar strictly decreasing)")
    return 0.5 * (log_sigma[:-1] + log_sigma[1:])


def lognormal_timesteps(boundaries: torch.Tensor, mean: float, std: float, batch_size: int,
                        device: torch.device | str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Long ``[B]`` indices ``t`` with ``ln σ ~ N(mean, std²)`` rounded to the nearest ``ln σ_t`` (see module).

    ``boundaries`` come from :func:`nearest_log_sigma_boundaries` (any device; moved to ``device``). Draws
    ``B`` standard normals (float32) from ``generator``, so a copy of the generator reproduces the result.
    """
    log_sigma = mean + std * randn(batch_size, device, generator)  # EDM Table 1: ln σ ~ N(P_mean, P_std²)
    return torch.searchsorted(boundaries.to(device=device, dtype=log_sigma.dtype), log_sigma)
