"""A deliberately small, plain CNN denoiser: the baseline the U-Net is compared against.

Reproduces the small network of one course project report on diffusion for data generation: five
same-padding convolutions with GELU (Hendrycks & Gimpel 2016) between them,

    in -> 16 -> 32 -> 32 -> 16 -> out      kernels 7x7, 7x7, 7x7, 7x7, 3x3

with no down-sampling, no normalisation and no skip connections. The timestep enters as sine/cosine
features (:func:`~dreamdata.networks.embeddings.timestep_embedding`) passed through an MLP
``Linear(feat, 128) - GELU - Linear(128, 128) - GELU - Linear(128, 16)``, whose 16 outputs are added to
the 16 feature maps after the first conv layer (conv + GELU), broadcast over height and width. The
class-conditional variant adds a learned 16-dim class embedding (``num_classes + 1`` rows, the last the
null class for classifier-free guidance) at the same place. Its receptive field is 25x25 pixels, so it
sees most of a 28x28 digit but has far less capacity than the U-Net; it exists to show how much the
architecture matters.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dreamdata.networks.embeddings import ClassEmbedding, conditioning_vector


class SmallCNN(nn.Module):
    """Five-layer CNN denoiser ``(x_t, t, class_labels) -> prediction`` (see the module docstring).

    ``num_classes == 0`` gives the unconditional network (labels ignored). ``image_size`` is recorded
    for the callers (the network is fully convolutional and works at any size). ``out_channels`` defaults
    to ``in_channels`` (``2 * in_channels`` for a learned variance).
    """

    channels = (16, 32, 32, 16)  # hidden widths of the first four convs
    kernel_sizes = (7, 7, 7, 7, 3)
    hidden = 128  # width of the two hidden layers of the time MLP

    def __init__(self, in_channels: int, image_size: int, num_classes: int, time_features: int = 32,
                 out_channels: Optional[int] = None):
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else int(out_channels)
        self.image_size = image_size
        self.num_classes = num_classes
        self.null_class = num_classes
        self.time_features = time_features

        widths = (in_channels, *self.channels, self.out_channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, k, padding=k // 2)
            for cin, cout, k in zip(widths[:-1], widths[1:], self.kernel_sizes))
        first = self.channels[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(time_features, self.hidden), nn.GELU(),
            nn.Linear(self.hidden, self.hidden), nn.GELU(),
            nn.Linear(self.hidden, first))
        self.class_embedding = ClassEmbedding(num_classes, first) if num_classes > 0 else None

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        cond = conditioning_vector(self.time_mlp, self.time_features, self.class_embedding, t, class_labels,
                                   x.shape[0], x.device)

        h = F.gelu(self.convs[0](x)) + cond[:, :, None, None].to(x.dtype)
        for conv in self.convs[1:-1]:
            h = F.gelu(conv(h))
        return self.convs[-1](h)
