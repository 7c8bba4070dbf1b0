"""DCGAN generator and discriminator (Radford et al. 2016) for 28, 32 and 64 px images.

Both follow the DCGAN guidelines: strided convolutions instead of pooling (transposed in G), batch norm
and ReLU in G with tanh on the output, LeakyReLU(0.2) in D. Two later additions are built in:

* class conditioning - conditional batch norm in G (de Vries et al. 2017) and the projection
  discriminator (Miyato & Koyama 2018, eq. 3) in D;
* spectral normalisation of D's layers (Miyato et al. 2018), on by default.

The generator keeps the network contract of :mod:`dreamdata.networks` (``in_channels``,
``image_size``, ``num_classes``, ``null_class``) and adds ``latent_dim`` and ``start_shape``: a sample
starts as ``z ~ N(0, I)`` of shape ``start_shape`` and ``generator(z, class_labels)`` maps it to an image
in (-1, 1) in one step.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from dreamdata.gan.batch_norm import ConditionalBatchNorm2d

__all__ = ["SUPPORTED_SIZES", "DCGANGenerator", "DCGANDiscriminator"]

# image size -> (side of G's first feature map s0, number of 2x up-samplings n): s0 * 2**n == size.
_GENERATOR_LAYOUT = {28: (7, 2), 32: (4, 3), 64: (4, 4)}
SUPPORTED_SIZES = tuple(sorted(_GENERATOR_LAYOUT))


def _check_size(image_size: int) -> None:
    if image_size not in _GENERATOR_LAYOUT:
        supported = ", ".join(str(s) for s in SUPPORTED_SIZES)
        raise ValueError(f"DCGAN networks support image sizes {supported}; got image_size={image_size}")


def _check_labels(class_labels: Optional[torch.Tensor], num_classes: int, batch_size: int,
                  device: torch.device) -> Optional[torch.Tensor]:
    """The labels of a conditional network as a long tensor [batch] (or soft class weights [batch, classes],
    non-negative rows summing to 1, for interpolating between classes), or ``None`` when unconditional."""
    if num_classes == 0:
        return None  # the unconditional network ignores labels, as every dreamdata network does
    if class_labels is None:
        raise ValueError(f"this network is class-conditional ({num_classes} classes) and needs class_labels, "
                         f"a long tensor [batch] with values in 0..{num_classes - 1}; got None")
    if class_labels.is_floating_point() and class_labels.shape == (batch_size, num_classes):
        if batch_size and (bool((class_labels < 0).any())
                           or not torch.allclose(class_labels.sum(1), torch.ones_like(class_labels[:, 0]))):
            raise ValueError("soft class_labels must be non-negative class weights whose rows sum to 1")
        return class_labels.to(device=device)
    if class_labels.shape != (batch_size,) or class_labels.is_floating_point() or class_labels.is_complex():
        raise ValueError(f"class_labels must be an integer tensor of shape [{batch_size}], got dtype "
                         f"{class_labels.dtype} and shape {list(class_labels.shape)}")
    if batch_size and bool(((class_labels < 0) | (class_labels >= num_classes)).any()):
        raise ValueError(f"class_labels must lie in 0..{num_classes - 1} (this network has {num_classes} "
                         f"classes and no null class), got values from {int(class_labels.min())} "
                         f"to {int(class_labels.max())}")
    return class_labels.to(device=device, dtype=torch.long)


class DCGANGenerator(nn.Module):
    """``G(z, class_labels) -> images [B, out_channels, image_size, image_size]`` in (-1, 1).

    Layout, with ``(s0, n)`` = (7, 2) at 28 px, (4, 3) at 32 px, (4, 4) at 64 px::

        z [B, latent_dim] -> Linear -> [width * 2**(n-1), s0, s0] -> CBN -> ReLU
        n times: ConvTranspose(4, stride 2, padding 1), channels halved, size doubled -> CBN -> ReLU
        Conv(3x3) -> out_channels -> tanh

    so the last feature map has ``width // 2`` channels (``width`` must be even). Every CBN is a
    :class:`ConditionalBatchNorm2d` fed the class labels when ``num_classes > 0``, plain batch norm
    otherwise. Layers followed by batch norm have no bias (BN's shift makes it redundant). Weights keep
    PyTorch's default initialisation.
    """

    def __init__(self, out_channels: int, image_size: int, num_classes: int = 0, latent_dim: int = 128,
                 width: int = 64):
        super().__init__()
        _check_size(image_size)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even number >= 2 (the last feature map has width // 2 "
                             f"channels), got {width}")
        if latent_dim < 1 or out_channels < 1:
            raise ValueError(f"latent_dim and out_channels must be >= 1, got {latent_dim} and {out_channels}")
        self.in_channels = out_channels  # the contract's name for the channels of the images it makes
        self.out_channels = out_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.null_class = num_classes
        self.latent_dim = latent_dim
        self.start_shape = (latent_dim,)

        s0, n = _GENERATOR_LAYOUT[image_size]
        channels = [width * 2 ** (n - 1) // 2 ** i for i in range(n + 1)]
        self.first_shape = (channels[0], s0, s0)
        self.project = nn.Linear(latent_dim, channels[0] * s0 * s0, bias=False)
        self.project_norm = ConditionalBatchNorm2d(channels[0], num_classes)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)
            for cin, cout in zip(channels[:-1], channels[1:]))
        self.upsample_norms = nn.ModuleList(ConditionalBatchNorm2d(c, num_classes) for c in channels[1:])
        self.to_image = nn.Conv2d(channels[-1], out_channels, kernel_size=3, padding=1)
        self.activation = nn.ReLU()

    def forward(self, z: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape [batch, {self.latent_dim}] (start_shape {self.start_shape} per "
                             f"sample), got {list(z.shape)}")
        labels = _check_labels(class_labels, self.num_classes, z.shape[0], z.device)
        h = self.project(z).view(z.shape[0], *self.first_shape)
        h = self.activation(self.project_norm(h, labels))
        for conv, norm in zip(self.upsample, self.upsample_norms):
            h = self.activation(norm(conv(h), labels))
        return torch.tanh(self.to_image(h))


class DCGANDiscriminator(nn.Module):
    """``D(images, class_labels) -> logits [B]``, one real/fake score per image.

    Layout: strided convolutions with LeakyReLU(0.2), channels ``width, 2 * width, ...`` doubling at each,
    each halving the side (rounding up) until it is 4: 32 -> 16 -> 8 -> 4 and 64 -> 32 -> 16 -> 8 -> 4 with
    4x4 kernels (stride 2, padding 1); at 28 px, 28 -> 14 -> 7 with 4x4 kernels and 7 -> 4 with a 3x3
    kernel (stride 2, padding 1), the same rule applied to an odd side. The 4x4 map is summed over space
    (global sum pooling, as in the SNGAN discriminators) to features ``h`` ``[B, F]``, and

        unconditional:  D(x)    = linear(h)
        conditional:    D(x, y) = linear(h) + <embed(y), h>     (Miyato & Koyama 2018, eq. 3)

    D has no batch norm: the GAN losses and the R1 penalty (Mescheder et al. 2018) are per-example
    quantities, and the trainer sends real and fake images through D in one batch, so one image's score
    must not depend on the other images in the batch. With ``spectral_norm`` (the default) every
    convolution, the linear layer and the class embedding (the linear map of a one-hot label) are
    spectrally normalised (Miyato et al. 2018).
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int = 0, width: int = 64,
                 spectral_norm: bool = True):
        super().__init__()
        _check_size(image_size)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if width < 1 or in_channels < 1:
            raise ValueError(f"width and in_channels must be >= 1, got {width} and {in_channels}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        normalise = _spectral_norm if spectral_norm else (lambda layer: layer)

        convs, side, cin, cout = [], image_size, in_channels, width
        while side > 4:
            kernel = 4 if side % 2 == 0 else 3  # both halve the side, rounding up
            convs.append(normalise(nn.Conv2d(cin, cout, kernel_size=kernel, stride=2, padding=1)))
            side, cin, cout = (side + 1) // 2, cout, cout * 2
        self.convs = nn.ModuleList(convs)
        self.features = cin
        self.activation = nn.LeakyReLU(0.2)
        self.linear = normalise(nn.Linear(cin, 1))
        self.embed = normalise(nn.Embedding(num_classes, cin)) if num_classes > 0 else None

    def forward(self, images: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape [batch, {', '.join(map(str, expected))}], "
                             f"got {list(images.shape)}")
        labels = _check_labels(class_labels, self.num_classes, images.shape[0], images.device)
        h = images
        for conv in self.convs:
            h = self.activation(conv(h))
        h = h.sum(dim=(2, 3))
        logits = self.linear(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * h).sum(dim=1)  # Miyato & Koyama 2018, eq. 3
        return logits
