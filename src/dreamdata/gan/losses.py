"""GAN objectives and the R1 penalty, one value per example (shape ``[B]``; the caller averages).

``D(x)`` is the discriminator's logit for a real image, ``D(G(z))`` for a generated one.

* ``non_saturating`` (Goodfellow et al. 2014, section 3): D minimises
  ``-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))`` = ``softplus(-D(x)) + softplus(D(G(z)))``; G minimises
  ``-log sigmoid(D(G(z)))`` = ``softplus(-D(G(z)))``, which keeps G's gradient alive early on, when D
  rejects its samples easily (the "non-saturating" trick of the same paper).
* ``hinge`` (Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018, "Spectral normalization"): D minimises
  ``relu(1 - D(x)) + relu(1 + D(G(z)))``, G minimises ``-D(G(z))``.

``softplus`` is computed stably, so saturated logits give finite losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["GAN_LOSSES", "discriminator_loss", "generator_loss", "r1_penalty"]

GAN_LOSSES = ("non_saturating", "hinge")


def _check_kind(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; known losses: {', '.join(GAN_LOSSES)}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """D's loss per example pair.

    non_saturating: ``softplus(-D(x)) + softplus(D(G(z)))``; hinge: ``relu(1 - D(x)) + relu(1 + D(G(z)))``.
    """
    _check_kind(kind)
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"real and fake logits must have the same shape, got {list(real_logits.shape)} and "
                         f"{list(fake_logits.shape)}")
    if kind == "non_saturating":
        return F.softplus(-real_logits) + F.softplus(fake_logits)
    return F.relu(1 - real_logits) + F.relu(1 + fake_logits)


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """G's loss per example: non_saturating ``softplus(-D(G(z)))``; hinge ``-D(G(z))``."""
    _check_kind(kind)
    if kind == "non_saturating":
        return F.softplus(-fake_logits)
    return -fake_logits


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, eq. 9) per example: ``||grad_x D(x)||^2`` over each real image's pixels.

    The caller multiplies by ``gamma / 2``. The gradient of ``real_logits.sum()`` gives each example's own
    gradient because D scores every image independently (no batch norm). ``create_graph=True`` keeps the
    penalty differentiable with respect to D's weights. ``real_images`` must be the tensor D was applied
    to, with ``requires_grad`` set before the forward pass.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty needs real_images.requires_grad: call real_images.requires_grad_(True) "
                         "before computing real_logits = D(real_images)")
    (gradient,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return gradient.pow(2).flatten(1).sum(dim=1)
