"""Class-conditional batch norm for the GAN generator, and "standing statistics" for its EMA copy.

:class:`ConditionalBatchNorm2d` normalises with batch statistics and then applies a gain and a bias
looked up per class (de Vries et al. 2017, "Modulating early visual processing by language"; used in the
generator of Miyato & Koyama 2018, "cGANs with projection discriminator").

:func:`recalibrate_batch_norm` re-estimates every batch-norm layer's running mean and variance for the
weights the module has now. The trainer's EMA generator copies its buffers from the live generator, so
its running statistics describe another network's activations; sampling it in eval mode with those
statistics gives washed-out or saturated images. Re-running it on fresh latents with a cumulative
average fixes that (the "standing statistics" of Brock et al. 2019, BigGAN, appendix C.1).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["ConditionalBatchNorm2d", "recalibrate_batch_norm"]


class ConditionalBatchNorm2d(nn.Module):
    """``BN(x)`` with a per-class affine map: ``gain[y] * (x - mean) / sqrt(var + eps) + bias[y]``.

    With ``num_classes > 0`` the normalisation itself is an ``nn.BatchNorm2d(affine=False)`` (so train /
    eval mode, running statistics and :func:`recalibrate_batch_norm` behave exactly as for plain batch
    norm) and the gain and bias are rows of two ``nn.Embedding(num_classes, num_features)`` tables,
    initialised to 1 and 0 so that a fresh layer is plain batch norm. With ``num_classes == 0`` it is a
    plain affine ``nn.BatchNorm2d`` and ``class_labels`` is ignored.

    ``class_labels`` may also be soft: float class weights ``[B, num_classes]``, whose gain and bias are the
    weighted sums of the rows, ``sum_k w_k gain[k]`` - the class-embedding interpolation of Brock et al.
    (2019). One-hot weights give exactly the hard label's gain and bias.
    """

    def __init__(self, num_features: int, num_classes: int = 0):
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_features = num_features
        self.num_classes = num_classes
        self.batch_norm = nn.BatchNorm2d(num_features, affine=num_classes == 0)
        if num_classes > 0:
            self.gain = nn.Embedding(num_classes, num_features)
            self.bias = nn.Embedding(num_classes, num_features)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        normalised = self.batch_norm(x)
        if self.num_classes == 0:
            return normalised
        if class_labels is None:
            raise ValueError(f"this ConditionalBatchNorm2d is conditional ({self.num_classes} classes) and needs "
                             "class_labels, a long tensor [batch] of class indices; got None")
        if class_labels.is_floating_point():  # soft labels: a mixture of the class embeddings
            gain = (class_labels @ self.gain.weight)[:, :, None, None]
            bias = (class_labels @ self.bias.weight)[:, :, None, None]
        else:
            gain = self.gain(class_labels)[:, :, None, None]
            bias = self.bias(class_labels)[:, :, None, None]
        return gain * normalised + bias


def _module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _module_dtype(module: nn.Module) -> torch.dtype:
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


@torch.no_grad()
def recalibrate_batch_norm(generator: nn.Module, batches: int = 8, batch_size: int = 256, seed: int = 0) -> None:
    """Reset and re-estimate the running statistics of every ``nn.BatchNorm2d`` inside ``generator``.

    Each batch-norm layer is reset and switched to ``momentum=None`` (a cumulative average), and
    ``generator`` is run in train mode on ``batches`` batches of ``z ~ N(0, I)`` of shape
    ``[batch_size, generator.latent_dim]`` - with class labels uniform over ``generator.num_classes`` when
    it is conditional. Afterwards each layer's ``running_mean`` is the mean of the per-batch means and its
    ``running_var`` the mean of the per-batch unbiased variances (torch's cumulative average).

    Every draw comes from ``torch.Generator(device=<generator's device>).manual_seed(seed)``, never from
    torch's global RNG: the trainer calls this mid-run and relies on the global RNG state for exact
    resume. Each layer's momentum and every submodule's train/eval mode are restored on return.
    """
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches and batch_size must be >= 1, got batches={batches}, batch_size={batch_size}")
    layers = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    if not layers:
        return
    device, dtype = _module_device(generator), _module_dtype(generator)
    rng = torch.Generator(device=device).manual_seed(seed)
    modes = {m: m.training for m in generator.modules()}
    momenta = {m: m.momentum for m in layers}
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
        generator.train()
        num_classes = getattr(generator, "num_classes", 0)
        for _ in range(batches):
            z = torch.randn((batch_size, generator.latent_dim), generator=rng, device=device, dtype=dtype)
            labels = None
            if num_classes > 0:
                labels = torch.randint(0, num_classes, (batch_size,), generator=rng, device=device)
            generator(z, labels)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        for module, training in modes.items():
            module.training = training
