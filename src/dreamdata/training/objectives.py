"""What one training step optimises: a diffusion loss (one network) or a GAN's two phases (G and D).

The trainer (:mod:`dreamdata.training.trainer`) owns the loop - data, budget, run directory, checkpoints,
exact resume, DDP, logging - and talks to an *objective* only through this contract:

* ``network`` - the module whose weights a checkpoint stores as ``model.*`` (the denoiser; for a GAN a
  container of ``generator`` and ``discriminator``), and ``ema`` - the averaged copy of the sampling network
  (``ema.*``);
* ``loss_names`` and ``step(images, labels, agree) -> (losses, applied)``: one optimisation step, whose
  losses ``[len(loss_names)]`` are logged under those names. ``agree(*values)`` is the trainer's one
  collective per decision: True when every value is finite on every rank (it also shares a pending Ctrl-C);
  a step it refuses is not applied;
* ``optimizer_state()`` / ``load_optimizer_state(state, config)`` - what a checkpoint needs to resume;
* ``validation_losses(images, labels, generator)`` - a held-out loss ``[B]`` with fixed randomness;
* ``sampling_network()`` - the EMA network ready to sample (a GAN first re-estimates its batch-norm
  statistics, see :func:`dreamdata.gan.batch_norm.recalibrate_batch_norm`).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dreamdata.config import RunConfig
from dreamdata.training.ema import EMA
from dreamdata.training.setup import autocast_context, build_optimizer, lr_multiplier

Agree = Callable[..., bool]


class OptimizedParameters:
    """One optimizer and its warm-up/decay LR schedule over one module's parameters."""

    def __init__(self, module: nn.Module, config: RunConfig, lr: float, total_steps: Optional[int]):
        tc = config.train
        self.module = module
        self.optimizer = build_optimizer(module.parameters(), tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_multiplier(step, tc.warmup_steps, tc.lr_schedule, total_steps))
        self.total_steps = total_steps

    def gradient_norm(self, clip: float) -> torch.Tensor:
        """The total gradient norm (before clipping to ``clip``; 0 = no clipping)."""
        if clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
        return torch.nn.utils.get_total_norm([p.grad for p in self.module.parameters() if p.grad is not None])

    def step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()

    def skip(self) -> None:
        """A step not applied: the LR schedule still follows the step count."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()

    def state(self) -> tuple[dict, dict]:
        return self.optimizer.state_dict(), self.scheduler.state_dict()

    def load(self, optimizer_state: dict, scheduler_state: dict, config: RunConfig, lr: float) -> None:
        """Restore a checkpoint's state, then apply the (resumed) config's LR, betas and weight decay: the
        saved state would restore the old ones, so ``--resume RUN train.lr=...`` would be written to
        config.yaml but not used. Unchanged values give the very numbers LambdaLR computes, so an exact
        resume stays exact."""
        tc = config.train
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(scheduler_state)
        self.scheduler.base_lrs = [lr for _ in self.optimizer.param_groups]
        multiplier = lr_multiplier(self.scheduler.last_epoch, tc.warmup_steps, tc.lr_schedule, self.total_steps)
        for group in self.optimizer.param_groups:
            group.update(lr=lr * multiplier, initial_lr=lr, betas=(tc.adam_betas[0], tc.adam_betas[1]),
                         weight_decay=tc.weight_decay)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def last_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


def _wrap(module: nn.Module, config: RunConfig, distributed: bool, device: torch.device) -> nn.Module:
    """The module as the step calls it: compiled when asked, and DDP-wrapped under torchrun."""
    wrapped = torch.compile(module) if config.train.compile else module
    if distributed:
        wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    return wrapped


class DiffusionObjective:
    """The process's own loss (``L_simple``, min-SNR, the hybrid or VLB loss, the cold-diffusion L1...) of one
    denoiser, with classifier-free guidance's label dropout (``train.p_uncond``, Ho & Salimans 2022).

    When the process importance-samples ``t`` (``process.importance_sampling``), each applied step records its
    ``L_t`` values in the process's :attr:`~dreamdata.process.gaussian.GaussianDiffusion.timestep_sampler`
    (gathered from every rank under DDP, so all ranks keep the same history), and that history is part of
    :meth:`optimizer_state`, so a resumed run draws the same ``t``.
    """

    loss_names = ("loss",)

    def __init__(self, config: RunConfig, network: nn.Module, process, device: torch.device,
                 distributed: bool, total_steps: Optional[int]):
        tc = config.train
        self.config, self.process, self.device = config, process, device
        self.network = network
        self.distributed = distributed
        self.ema = EMA(network, tc.ema_decay, tc.ema_warmup)
        self.optimized = OptimizedParameters(network, config, tc.lr, total_steps)
        self.trained_network = _wrap(network, config, distributed, device)
        self.timestep_sampler = getattr(process, "timestep_sampler", None)

    def step(self, images: torch.Tensor, labels: torch.Tensor, agree: Agree) -> tuple[torch.Tensor, bool]:
        tc = self.config.train
        if self.network.num_classes > 0 and tc.p_uncond > 0:
            drop = torch.rand(labels.shape[0], device=self.device) < tc.p_uncond
            labels = torch.where(drop, torch.full_like(labels, self.network.null_class), labels)
        terms = None
        with autocast_context(tc.precision, self.device):
            if self.timestep_sampler is None:
                loss = self.process.training_losses(self.trained_network, images, labels).mean()
            else:
                terms = self.process.training_loss_terms(self.trained_network, images, labels)
                loss = terms.loss.mean()
        self.optimized.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self.optimized.gradient_norm(tc.grad_clip)
        loss = loss.detach()
        if not agree(loss, grad_norm):
            self.optimized.skip()
            return loss.reshape(1), False
        self.optimized.step()
        self.ema.update(self.network)
        if terms is not None:
            self.timestep_sampler.update(*self._gathered(terms.t, terms.vlb))
        return loss.reshape(1), True

    def _gathered(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor concatenated over the ranks in rank order (itself without DDP)."""
        if not self.distributed:
            return list(tensors)
        gathered = []
        for tensor in tensors:
            parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(parts, tensor.contiguous())
            gathered.append(torch.cat(parts))
        return gathered

    def validation_losses(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
        with autocast_context(self.config.train.precision, self.device):
            if self.timestep_sampler is None:
                return self.process.training_losses(network, images, labels, generator=generator)
            # uniform t, as without importance sampling (the same draws): comparable whatever the history
            t = self.process.sample_timesteps(images.shape[0], images.device, generator)
            return self.process.training_losses(network, images, labels, generator=generator, t=t)

    def validation_networks(self) -> dict[str, nn.Module]:
        return {"val_loss": self.network, "val_loss_ema": self.ema.module}

    def sampling_network(self) -> nn.Module:
        return self.ema.module

    def optimizer_state(self) -> dict:
        optimizer, scheduler = self.optimized.state()
        state = {"optimizer": optimizer, "scheduler": scheduler}
        if self.timestep_sampler is not None:
            state["timestep_sampler"] = self.timestep_sampler.state_dict()
        return state

    def load_optimizer_state(self, state: dict, config: RunConfig) -> None:
        self.config = config
        self.optimized.load(state["optimizer"], state["scheduler"], config, config.train.lr)
        if self.timestep_sampler is not None and "timestep_sampler" in state:
            self.timestep_sampler.load_state_dict(state["timestep_sampler"])

    def last_lr(self) -> float:
        return self.optimized.last_lr()


class GAN(nn.Module):
    """Generator and discriminator as one module, so a checkpoint's ``model.*`` holds both
    (``model.generator.*``, ``model.discriminator.*``)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator


class AdversarialObjective:
    """Alternating GAN steps (Goodfellow et al. 2014, Algorithm 1 with k = 1): a D step on real and fresh
    fake images, then a G step through the just-updated D, then the EMA of G (Karras et al. 2018).

    ``G(z)`` is evaluated once per step: D trains on its detached output and G back-propagates through it.
    Under DDP the G step calls the *unwrapped* D with its parameters frozen, so D's gradients are neither
    computed nor all-reduced twice. A D step whose loss or gradient is non-finite is skipped with the G step;
    a G step that is non-finite after an applied D step leaves that D update in place (both are finite
    updates) and counts as skipped.
    """

    loss_names = ("loss", "loss_generator")  # "loss" is D's: it is what validation scores too

    def __init__(self, config: RunConfig, network: GAN, process, device: torch.device, distributed: bool,
                 total_steps: Optional[int]):
        tc = config.train
        self.config, self.process, self.device = config, process, device
        self.network = network
        self.generator, self.discriminator = network.generator, network.discriminator
        self.ema = EMA(self.generator, tc.ema_decay, tc.ema_warmup)
        self.optimized_generator = OptimizedParameters(self.generator, config, tc.lr, total_steps)
        self.optimized_discriminator = OptimizedParameters(self.discriminator, config,
                                                           self._discriminator_lr(config), total_steps)
        self.trained_generator = _wrap(self.generator, config, distributed, device)
        self.trained_discriminator = _wrap(self.discriminator, config, distributed, device)

    @staticmethod
    def _discriminator_lr(config: RunConfig) -> float:
        tc = config.train
        return tc.lr if tc.discriminator_lr is None else tc.discriminator_lr

    def _labels(self, labels: torch.Tensor) -> Optional[torch.Tensor]:
        return labels if self.generator.num_classes > 0 else None

    def step(self, images: torch.Tensor, labels: torch.Tensor, agree: Agree) -> tuple[torch.Tensor, bool]:
        tc = self.config.train
        labels = self._labels(labels)
        z = torch.randn(images.shape[0], self.generator.latent_dim, device=self.device)
        with autocast_context(tc.precision, self.device):
            fake = self.trained_generator(z, labels)
            d_loss = self.process.discriminator_losses(self.trained_discriminator, images, fake, labels).mean()
        self.optimized_discriminator.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_norm = self.optimized_discriminator.gradient_norm(tc.grad_clip)
        d_loss = d_loss.detach()
        if not agree(d_loss, d_norm):
            self.optimized_discriminator.skip()
            self.optimized_generator.skip()
            return torch.stack([d_loss, torch.full_like(d_loss, float("nan"))]), False
        self.optimized_discriminator.step()

        self.discriminator.requires_grad_(False)
        try:
            with autocast_context(tc.precision, self.device):
                g_loss = self.process.generator_losses(self.discriminator, fake, labels).mean()
            self.optimized_generator.optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
        finally:
            self.discriminator.requires_grad_(True)
        g_norm = self.optimized_generator.gradient_norm(tc.grad_clip)
        g_loss = g_loss.detach()
        losses = torch.stack([d_loss, g_loss])
        if not agree(g_loss, g_norm):
            self.optimized_generator.skip()
            return losses, False
        self.optimized_generator.step()
        self.ema.update(self.generator)
        return losses, True

    def validation_losses(self, generator: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          noise: torch.Generator) -> torch.Tensor:
        """D's loss (no augmentation) on held-out reals and the fakes ``generator`` makes from fixed codes."""
        labels = self._labels(labels)
        z = torch.randn(images.shape[0], self.generator.latent_dim, device=self.device, generator=noise)
        modes = [(module, module.training) for module in (generator, self.discriminator)]
        for module, _ in modes:  # eval mode: batch norm per code, and no spectral-norm power iteration
            module.eval()
        try:
            with autocast_context(self.config.train.precision, self.device):
                fake = generator(z, labels)
                return self.process.held_out_losses(self.discriminator, images, fake, labels)
        finally:
            for module, mode in modes:
                module.train(mode)

    def validation_networks(self) -> dict[str, nn.Module]:
        return {"val_loss": self.generator, "val_loss_ema": self.sampling_network()}

    def sampling_network(self) -> nn.Module:
        """The EMA generator with batch-norm statistics of its own (the ones the EMA copies from the live
        G do not fit the averaged weights). Re-estimated from a fixed seed, never torch's global RNG, so
        calling this does not change the training run; the next EMA update copies the live ones back."""
        from dreamdata.gan.batch_norm import recalibrate_batch_norm

        recalibrate_batch_norm(self.ema.module, seed=self.config.train.seed)
        return self.ema.module

    def optimizer_state(self) -> dict:
        g_optimizer, g_scheduler = self.optimized_generator.state()
        d_optimizer, d_scheduler = self.optimized_discriminator.state()
        return {"optimizer": g_optimizer, "scheduler": g_scheduler,
                "discriminator_optimizer": d_optimizer, "discriminator_scheduler": d_scheduler}

    def load_optimizer_state(self, state: dict, config: RunConfig) -> None:
        self.config = config
        self.optimized_generator.load(state["optimizer"], state["scheduler"], config, config.train.lr)
        self.optimized_discriminator.load(state["discriminator_optimizer"], state["discriminator_scheduler"],
                                          config, self._discriminator_lr(config))

    def last_lr(self) -> float:
        return self.optimized_generator.last_lr()


def build_networks(config: RunConfig, channels: int, image_size: int, num_classes: int) -> nn.Module:
    """The module a run trains: the denoiser ``model.network`` names (with ``2 * channels`` outputs for a
    ``learned_range`` variance), or for ``process.kind: gan`` a :class:`GAN` of a DCGAN generator and
    discriminator (``model.base_channels`` wide)."""
    from dreamdata.networks import build_network
    from dreamdata.process.variance import network_output_channels

    if config.process.kind != "gan":
        out_channels = network_output_channels(config.process.variance, channels)
        return build_network(config.model, channels, image_size, num_classes, out_channels=out_channels)
    from dreamdata.gan.networks import DCGANDiscriminator, DCGANGenerator

    from dreamdata.errors import ConfigError

    m = config.model
    classes = num_classes if m.class_conditional else 0
    try:
        return GAN(DCGANGenerator(channels, image_size, classes, latent_dim=m.latent_dim, width=m.base_channels),
                   DCGANDiscriminator(channels, image_size, classes, width=m.base_channels,
                                      spectral_norm=m.spectral_norm))
    except ValueError as error:  # e.g. an image size DCGAN has no layout for: set data.image_size / pad_to
        raise ConfigError(f"config key model.network=dcgan with {image_size}-px, {channels}-channel data "
                          f"(data.image_size / data.pad_to) and model.base_channels={m.base_channels}: "
                          f"{error}") from None


def build_objective(config: RunConfig, network: nn.Module, process, device: torch.device, distributed: bool,
                    total_steps: Optional[int]):
    """The objective for ``config.process.kind``: adversarial for ``gan``, the process's loss otherwise."""
    kind = AdversarialObjective if config.process.kind == "gan" else DiffusionObjective
    return kind(config, network, process, device, distributed, total_steps)
