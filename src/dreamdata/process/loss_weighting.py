"""How a Gaussian diffusion weights the per-timestep MSE of its prediction (``loss_weighting``).

* ``simple``: weight 1, Ho et al.'s ``L_simple`` (2020, eq. 14). For EDM's ``prediction="edm"`` this *is*
  EDM's weighting: ``λ(σ) ||D - x_0||² = λ(σ) c_out(σ)² ||F - target||²`` and ``λ(σ) c_out(σ)² = 1``
  (Karras et al. 2022, eq. 8 and Table 1; :mod:`dreamdata.process.edm`), so the MSE on ``F`` is unweighted.
* ``min_snr``: Min-SNR-gamma (Hang et al. 2023, sec. 3.4), ``min(snr, gamma)`` times the x0-space MSE with
  ``snr = alpha_bar / (1 - alpha_bar)``, expressed for the network's parameterisation by
  :func:`min_snr_weight`.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["LOSS_WEIGHTINGS", "min_snr_weight"]

LOSS_WEIGHTINGS = ("simple", "min_snr")


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: str, c_out: Optional[torch.Tensor] = None
                   ) -> torch.Tensor:
    """The Min-SNR-gamma weight (Hang et al. 2023, sec. 3.4) of the MSE of ``prediction``'s output.

    ``min(snr, gamma) / snr`` for epsilon, ``min(snr, gamma)`` for x0, ``min(snr, gamma) / (snr + 1)`` for v,
    ``min(snr, gamma) c_out²`` for edm (``c_out`` at the same timesteps as ``snr``, EDM only). Each equals
    ``min(snr, gamma)`` times the x0-space MSE.
    """
    clipped = snr.clamp(max=gamma)  # Hang et al. 2023, sec. 3.4 (min(SNR, gamma))
    if prediction == "epsilon":
        return clipped / snr  # Hang et al. 2023, sec. 3.4 (epsilon: min(SNR, gamma) / SNR)
    if prediction == "x0":
        return clipped  # Hang et al. 2023, sec. 3.4 (x0: min(SNR, gamma))
    if prediction == "edm":
        return clipped * c_out ** 2  # ||D - x0||² = c_out² ||F - target||²
    return clipped / (snr + 1.0)  # Hang et al. 2023, sec. 3.4 (v: min(SNR, gamma) / (SNR + 1))
