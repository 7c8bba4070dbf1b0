"""The adversarial objective as a "process": what a GAN trains on, in the shape the trainer and samplers use.

A GAN corrupts nothing, so this is not a :class:`~dreamdata.process.base.Process` in the diffusion sense;
it plays that role for ``process.kind: gan``: it owns the training objective (the loss, DiffAugment, the R1
penalty) as two phases, as StyleGAN2-ADA's ``training/loss.py`` splits them:

* :meth:`AdversarialProcess.discriminator_losses` - the D step: real and fake images, both augmented with
  the same DiffAugment policy (Zhao et al. 2020, eq. 4: ``T`` is applied to real and fake images alike, so
  D never sees an un-augmented image and G is never pushed towards the augmentations), scored in one
  batch, plus ``gamma / 2 * |grad_x D(T(x))|^2`` on the reals (R1, Mescheder et al. 2018, eq. 9);
* :meth:`AdversarialProcess.generator_losses` - the G step, through the same augmentation.

Sampling is one network evaluation (``num_steps == 1``): the ``gan`` sampler calls ``G(z, y)``.
"""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.config import ProcessConfig
from dreamdata.gan.diffaugment import diff_augment, parse_policy
from dreamdata.gan.losses import discriminator_loss, generator_loss, r1_penalty


class AdversarialProcess:
    """The GAN objective: ``loss`` (non-saturating or hinge), DiffAugment ``policy``, R1 weight ``r1_gamma``."""

    num_steps = 1  # sampling is a single forward pass of the generator

    def __init__(self, loss: str = "non_saturating", policy: tuple[str, ...] = (), r1_gamma: float = 0.0):
        self.loss = loss
        self.policy = tuple(policy)
        self.r1_gamma = float(r1_gamma)

    @classmethod
    def from_config(cls, config: ProcessConfig) -> "AdversarialProcess":
        return cls(loss=config.gan_loss, policy=parse_policy(config.diffaugment), r1_gamma=config.r1_gamma)

    def discriminator_losses(self, discriminator, real: torch.Tensor, fake: torch.Tensor,
                             class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-example D loss ``[B]`` on ``real`` and (detached) ``fake`` images of the same classes, plus the
        R1 term when ``r1_gamma > 0``. One call of ``discriminator`` on the concatenated batch (DDP needs one
        forward per backward; D has no batch norm, so the halves do not mix)."""
        fake = fake.detach()
        if self.r1_gamma > 0:
            real = real.detach().requires_grad_(True)
        batch = real.shape[0]
        images = diff_augment(torch.cat([real, fake]), self.policy)
        labels = None if class_labels is None else torch.cat([class_labels, class_labels])
        logits = discriminator(images, labels)
        real_logits, fake_logits = logits[:batch], logits[batch:]
        losses = discriminator_loss(real_logits, fake_logits, self.loss)
        if self.r1_gamma > 0:
            # gradient w.r.t. the un-augmented reals, through the (differentiable) augmentation, as ADA does
            losses = losses + 0.5 * self.r1_gamma * r1_penalty(real_logits, real)
        return losses

    def generator_losses(self, discriminator, fake: torch.Tensor,
                         class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-example G loss ``[B]``: how real D finds the augmented fakes of the asked-for classes."""
        return generator_loss(discriminator(diff_augment(fake, self.policy), class_labels), self.loss)

    @torch.no_grad()
    def held_out_losses(self, discriminator, real: torch.Tensor, fake: torch.Tensor,
                        class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-example D loss on held-out reals and fixed fakes, without augmentation or R1: it rises when D
        memorises the training images (the overfitting signal Karras et al. 2020 read from D's outputs)."""
        logits = discriminator(torch.cat([real, fake]),
                               None if class_labels is None else torch.cat([class_labels, class_labels]))
        return discriminator_loss(logits[:real.shape[0]], logits[real.shape[0]:], self.loss)

    def training_losses(self, *args, **kwargs):
        raise TypeError("a GAN has no single training loss: it trains by alternating "
                        "discriminator_losses and generator_losses (see dreamdata.training.objectives)")
