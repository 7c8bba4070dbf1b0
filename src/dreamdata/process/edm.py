"""EDM's noise level and preconditioning (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", eq. 7-8 and Table 1), expressed for the discrete VP process.

**Noise level.** A Gaussian diffusion state ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` is EDM's state
``x̂ = x_t / sqrt(ᾱ_t) = x_0 + σ_t ε`` scaled by ``s = sqrt(ᾱ_t)``, with

    σ_t = sqrt((1 - ᾱ_t) / ᾱ_t),    ᾱ_t = 1 / (1 + σ_t²)     (Table 1, VP: s(t) = 1 / sqrt(1 + σ²))

**Preconditioning.** The denoiser wraps the raw network ``F`` (EDM eq. 7):

    D(x̂; σ) = c_skip(σ) x̂ + c_out(σ) F(c_in(σ) x̂; c_noise(σ))                                  (eq. 7)
    c_skip = σ_data² / (σ² + σ_data²),   c_out = σ σ_data / sqrt(σ² + σ_data²)                   (Table 1)
    c_in   = 1 / sqrt(σ² + σ_data²),     c_noise = ¼ ln σ                                          (Table 1)

so that the network's input and its training target both have unit variance when the data have standard
deviation ``σ_data``. Training minimises ``λ(σ) ||D(x̂; σ) - x_0||²`` (eq. 8) with

    λ(σ) = (σ² + σ_data²) / (σ σ_data)²                                                           (Table 1)
         = 1 / c_out(σ)²,

which is the unweighted MSE of ``F`` against its effective target ``(x_0 - c_skip x̂) / c_out`` (eq. 8
rewritten, EDM appendix B.6). :class:`~dreamdata.process.gaussian.GaussianDiffusion` with
``prediction="edm"`` uses these as tables over the discrete indices ``t`` (:func:`edm_tables`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Union

import torch

__all__ = ["EDMTables", "Preconditioning", "edm_loss_weight", "edm_preconditioning", "edm_sigma", "edm_tables"]

Number = Union[float, torch.Tensor]


def edm_sigma(alpha_bar: Number) -> Number:
    """EDM's noise level of a state with ``alpha_bar``: ``σ = sqrt((1 - ᾱ) / ᾱ)`` (Karras et al. 2022, Table 1).

    Takes a float (returns a float) or a tensor (returns a tensor; float64 keeps the digits of ``1 - ᾱ``).
    """
    if isinstance(alpha_bar, torch.Tensor):
        return ((1.0 - alpha_bar) / alpha_bar).sqrt()
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


class Preconditioning(NamedTuple):
    """EDM's preconditioning coefficients at noise levels ``σ`` (Karras et al. 2022, Table 1)."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def edm_preconditioning(sigma: torch.Tensor, sigma_data: float) -> Preconditioning:
    """``c_skip, c_out, c_in, c_noise`` at ``sigma`` (a tensor, any shape) for data of std ``sigma_data``."""
    variance = sigma ** 2 + sigma_data ** 2  # σ² + σ_data²: the variance of x̂ = x_0 + σ ε
    return Preconditioning(
        c_skip=sigma_data ** 2 / variance,  # Karras et al. 2022, Table 1
        c_out=sigma * sigma_data / variance.sqrt(),  # Table 1
        c_in=1.0 / variance.sqrt(),  # Table 1
        c_noise=0.25 * sigma.log(),  # Table 1 (¼ ln σ)
    )


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """``λ(σ) = (σ² + σ_data²) / (σ σ_data)²``, EDM's weight of ``||D - x_0||²`` (eq. 8 and Table 1)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2  # Karras et al. 2022, Table 1


class EDMTables(NamedTuple):
    """The per-index coefficients that turn EDM's preconditioning into operations on the VP state ``x_t``.

    Each is a tensor ``[T]`` indexed by ``t``. With ``a = sqrt(ᾱ_t)``, ``x̂ = x_t / a`` and ``σ = σ_t``:

    * ``input_scale = c_in / a``: the network input ``c_in x̂ = input_scale · x_t``;
    * ``x0_from_xt = c_skip / a`` and ``c_out``: ``D = x0_from_xt · x_t + c_out · F`` (eq. 7);
    * ``eps_from_xt = σ / ((σ² + σ_data²) a)`` and ``eps_from_out = c_out / σ``:
      ``ε̂ = (x̂ - D) / σ = eps_from_xt · x_t - eps_from_out · F``, consistent with ``x_t`` by construction;
    * ``target_x0 = (1 - c_skip) / c_out`` and ``target_eps = c_skip σ / c_out``: the target
      ``(x_0 - c_skip x̂) / c_out = target_x0 · x_0 - target_eps · ε`` with ``x̂ = x_0 + σ ε``, expanded so
      that ``1 - c_skip = σ² / (σ² + σ_data²)`` is computed without cancellation near ``σ = 0``.

    ``sigma`` and the Table 1 coefficients are kept for inspection (``c_noise`` is not fed to the network:
    see :class:`~dreamdata.process.gaussian.GaussianDiffusion`).
    """

    sigma: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor
    input_scale: torch.Tensor
    x0_from_xt: torch.Tensor
    eps_from_xt: torch.Tensor
    eps_from_out: torch.Tensor
    target_x0: torch.Tensor
    target_eps: torch.Tensor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "EDMTables":
        """A copy with every tensor moved to ``device`` and/or cast to ``dtype``."""
        return EDMTables(*(values.to(device=device, dtype=dtype) for values in self))


def edm_tables(alpha_bar: torch.Tensor, sigma_data: float) -> EDMTables:
    """:class:`EDMTables` for a schedule's ``alpha_bar`` (computed in float64 on the CPU)."""
    alpha_bar = alpha_bar.detach().to("cpu", torch.float64)
    sigma = edm_sigma(alpha_bar)  # Table 1 (VP)
    sqrt_alpha_bar = alpha_bar.sqrt()  # s(t) = 1 / sqrt(1 + σ²)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
    variance = sigma ** 2 + sigma_data ** 2
    return EDMTables(
        sigma=sigma, c_skip=c_skip, c_out=c_out, c_in=c_in, c_noise=c_noise,
        input_scale=c_in / sqrt_alpha_bar,  # c_in x̂ with x̂ = x_t / sqrt(ᾱ)
        x0_from_xt=c_skip / sqrt_alpha_bar,  # eq. 7: c_skip x̂
        eps_from_xt=sigma / (variance * sqrt_alpha_bar),  # (1 - c_skip) x̂ / σ
        eps_from_out=sigma_data / variance.sqrt(),  # c_out / σ
        target_x0=sigma / (sigma_data * variance.sqrt()),  # (1 - c_skip) / c_out
        target_eps=sigma_data / variance.sqrt(),  # c_skip σ / c_out
    )
