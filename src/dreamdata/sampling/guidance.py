"""Classifier-free guidance (Ho & Salimans 2022): one guided network output shared by every sampler."""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.process.base import Network

__all__ = ["guided_output", "resolve_null_class"]


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
