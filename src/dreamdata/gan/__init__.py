"""Pure-PyTorch GAN building blocks: DCGAN networks, conditional batch norm, losses and DiffAugment.

* :class:`DCGANGenerator` / :class:`DCGANDiscriminator` - DCGAN (Radford et al. 2016) with conditional
  batch norm in G, a projection discriminator and spectral normalisation in D
  (:mod:`dreamdata.gan.networks`);
* :class:`ConditionalBatchNorm2d` and :func:`recalibrate_batch_norm`, the "standing statistics" an EMA
  generator needs before eval-mode sampling (:mod:`dreamdata.gan.batch_norm`);
* :func:`discriminator_loss`, :func:`generator_loss` (``GAN_LOSSES``) and :func:`r1_penalty`
  (:mod:`dreamdata.gan.losses`);
* :func:`diff_augment`, :func:`parse_policy` and ``POLICIES`` - DiffAugment (Zhao et al. 2020,
  :mod:`dreamdata.gan.diffaugment`).
"""

from __future__ import annotations

from dreamdata.gan.batch_norm import ConditionalBatchNorm2d, recalibrate_batch_norm
from dreamdata.gan.diffaugment import POLICIES, diff_augment, parse_policy
from dreamdata.gan.losses import GAN_LOSSES, discriminator_loss, generator_loss, r1_penalty
from dreamdata.gan.networks import DCGANDiscriminator, DCGANGenerator

__all__ = [
    "ConditionalBatchNorm2d",
    "recalibrate_batch_norm",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "GAN_LOSSES",
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "POLICIES",
    "parse_policy",
    "diff_augment",
]
