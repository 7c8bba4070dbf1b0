"""A ConvNeXt block for the U-Net: the cold-diffusion report's network (Bansal et al. 2022's code uses it).

ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s") replaces the residual block's two 3x3 convs by a large
depthwise conv followed by a wide pointwise MLP. The diffusion variant here follows the block of the
``denoising-diffusion-pytorch`` U-Net that Bansal et al. trained their restorers with:

    h = DWConv7x7(x) + W e                 (the conditioning vector e as a per-channel bias)
    h = Conv3x3(GELU(Norm(Conv3x3(Norm(h)))))  widening by ``mult`` = 2 in between
    out = h + Skip(x)                      (1x1 conv when the width changes)

with ``Norm`` a one-group GroupNorm (LayerNorm over channels and pixels). The last conv is zero-initialised
like every residual branch of :class:`~dreamdata.networks.unet.UNet`, so the block starts as its skip path.
It has :class:`~dreamdata.networks.unet.ResBlock`'s constructor and ``forward(x, emb)``, so
``UNet(..., block=ConvNextBlock)`` swaps it in everywhere (``model.network: convnext_unet``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dreamdata.networks.unet import NetworkConfigError, zero_init

__all__ = ["ConvNextBlock"]


class ConvNextBlock(nn.Module):
    """``(x [B, in, H, W], emb [B, E]) -> [B, out, H, W]``; see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float,
                 scale_shift: bool = False, mult: int = 2, kernel_size: int = 7):
        super().__init__()
        if scale_shift:
            raise NetworkConfigError("the ConvNeXt block conditions by a bias only (scale_shift is a ResBlock option)")
        self.dropout = dropout
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                                   groups=in_channels)  # Liu et al. 2022, sec. 2.4 (large depthwise kernel)
        self.emb_proj = nn.Linear(emb_channels, in_channels)
        self.norm1 = nn.GroupNorm(1, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels * mult, 3, padding=1)  # inverted bottleneck (sec. 2.3)
        self.norm2 = nn.GroupNorm(1, out_channels * mult)
        self.conv2 = zero_init(nn.Conv2d(out_channels * mult, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x) + self.emb_proj(emb)[:, :, None, None].to(x.dtype)
        h = F.gelu(self.conv1(self.norm1(h)))  # Liu et al. 2022, sec. 2.5 (GELU)
        h = F.dropout(self.norm2(h), self.dropout, self.training)
        return self.conv2(h) + self.skip(x)
