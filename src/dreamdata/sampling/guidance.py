"""Classifier-free guidance (Ho & Salimans 2022): one guided network output shared by every sampler, and
the noise levels it is applied at.

**Guidance interval** (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample
and Distribution Quality in Diffusion Models"): guidance at high noise levels pulls samples towards a few
modes, and at low noise levels it barely matters, so they apply the weight ``w`` only while the noise level
lies in an interval ``σ_lo < σ ≤ σ_hi`` and take the plain conditional output elsewhere (``w = 0``: one
network pass instead of the doubled batch). The interval is given in EDM's noise level ``σ`` (Karras et
al. 2022), as in the paper, so published intervals carry over - theirs for ImageNet-512 (EDM2) is
``(0.28, 5.42]``. A Gaussian diffusion state ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` is the EDM state
``x_t / sqrt(ᾱ_t) = x_0 + σ_t ε`` scaled by ``s = sqrt(ᾱ_t)``, so

    σ_t = sqrt((1 - ᾱ_t) / ᾱ_t),    ᾱ_t = 1 / (1 + σ_t²)

(Karras et al. 2022, Table 1, VP: s = 1/sqrt(1 + σ²)), and the interval selects the visited training indices
``t`` whose ``σ_t`` lies in it (:func:`~dreamdata.process.edm.edm_sigma`, :func:`step_guidance_scales`).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Optional, Sequence

import torch

from dreamdata.process.base import Network
from dreamdata.process.edm import edm_sigma  # re-exported: its home is the process's EDM module

__all__ = ["check_guidance_interval", "edm_sigma", "guided_output", "in_guidance_interval", "resolve_null_class",
           "step_guidance_scales"]


def check_guidance_interval(interval: Any, name: str = "guidance_interval") -> Optional[tuple[float, float]]:
    """``interval`` as ``(σ_lo, σ_hi)`` floats, or ``None`` (guidance at every step).

    Raises ``ValueError`` naming ``name`` and the value unless it is two finite numbers with
    ``0 <= σ_lo < σ_hi``.
    """
    if interval is None:
        return None
    expected = f"{name}: expected two finite noise levels 0 <= sigma_lo < sigma_hi, got {interval!r}"
    if isinstance(interval, (str, bytes)) or not isinstance(interval, Sequence) or len(interval) != 2:
        raise ValueError(expected)
    if not all(isinstance(value, Real) and not isinstance(value, bool) for value in interval):
        raise ValueError(expected)
    low, high = float(interval[0]), float(interval[1])
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low < high):
        raise ValueError(expected)
    return low, high


def in_guidance_interval(sigma: float, interval: Optional[tuple[float, float]]) -> bool:
    """Whether guidance applies at noise level ``sigma``: ``σ_lo < σ ≤ σ_hi``, the paper's half-open
    interval (Kynkäänniemi et al. 2024); always when ``interval`` is ``None``."""
    return interval is None or interval[0] < sigma <= interval[1]


def step_guidance_scales(alpha_bar: torch.Tensor, timesteps: Sequence[int], guidance_scale: float,
                         interval: Optional[tuple[float, float]]) -> list[float]:
    """The guidance weight of each visited step: ``guidance_scale`` where ``σ_t`` of training index ``t``
    lies in ``interval`` (every step for ``None``), else 0 (the conditional output alone).

    ``alpha_bar`` is the schedule's (float64 keeps the digits of ``1 - ᾱ`` near ``t = 0``).
    """
    if interval is None or guidance_scale == 0:
        return [guidance_scale] * len(timesteps)
    values = alpha_bar.detach().to("cpu", torch.float64).tolist()
    return [guidance_scale if in_guidance_interval(edm_sigma(values[int(t)]), interval) else 0.0
            for t in timesteps]


def resolve_null_class(network: Network, class_labels: Optional[torch.Tensor], guidance_scale: float,
                       null_class: Optional[int]) -> Optional[int]:
    """The null-class label guidance will use: ``null_class``, else ``network.null_class`` (or ``None``).

    Raises ``ValueError`` when ``guidance_scale != 0`` but there are no class labels or no null class - a
    guided sample needs both a conditional and an unconditional prediction.
    """
    if guidance_scale == 0:
        return null_class
    if null_class is None:
        null_class = getattr(network, "null_class", None)
    if class_labels is None or null_class is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs class_labels and a null class "
                         f"(got class_labels={'None' if class_labels is None else 'a tensor'}, "
                         f"null_class={null_class!r})")
    return null_class


def guided_output(network: Network, x: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor],
                  guidance_scale: float, null_class: Optional[int],
                  guided_channels: Optional[int] = None) -> torch.Tensor:
    """``network``'s output at ``(x, t)``, with classifier-free guidance when ``guidance_scale != 0``.

    Guided: ``(1 + w) * out(x, c) - w * out(x, null)`` (Ho & Salimans 2022, eq. 6), with the conditional
    and unconditional halves in one batched forward pass. The formula is written for epsilon, but because
    every parameterisation is an affine function of epsilon at fixed ``(x, t)`` and the weights sum to 1,
    combining raw x0 or v outputs gives exactly the same guided epsilon. ``w = 0`` is a plain conditional
    pass (no doubled batch).

    ``guided_channels`` (default: all): only the first that many output channels (the prediction) are
    guided; the rest - a learned variance's channels - are the conditional output's, as in GLIDE (Nichol et
    al. 2022): guidance moves the mean, and extrapolating the interpolation ``v`` would push the variance
    outside ``[beta_tilde, beta]``.
    """
    if guidance_scale == 0:
        return network(x, t, class_labels)
    null_labels = torch.full_like(class_labels, null_class)
    both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([class_labels, null_labels]))
    conditional, unconditional = both.chunk(2)
    if guided_channels is None or guided_channels >= conditional.shape[1]:
        return (1.0 + guidance_scale) * conditional - guidance_scale * unconditional  # Ho & Salimans 2022, eq. 6
    c = guided_channels
    guided = (1.0 + guidance_scale) * conditional[:, :c] - guidance_scale * unconditional[:, :c]  # eq. 6
    return torch.cat([guided, conditional[:, c:]], dim=1)  # GLIDE: the variance of the conditional model
