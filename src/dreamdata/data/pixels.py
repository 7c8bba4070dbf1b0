"""Pixel conversions on uint8 image tensors: number of channels and spatial size.

Both are applied once at load time (never per batch), on uint8 so the dataset stays compact. The
grayscale conversion reproduces PIL's ``"L"`` mode bit for bit (ITU-R 601-2 luma, PIL's fixed-point
rounding), so an RGB folder converted here and one converted by PIL while decoding agree exactly.
The resize is torchvision's antialiased bilinear, the same whether applied to one image at decode time
or to a whole dataset afterwards.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

# PIL's fixed-point "L" conversion: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (0.299/0.587/0.114).
_LUMA_WEIGHTS = (19595, 38470, 7471)
_CHUNK = 4096  # images converted per step, to bound temporary memory on large datasets


def rgb_to_luma(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> uint8 ``[..., 1, H, W]`` exactly as PIL's ``convert("L")``."""
    red, green, blue = images.to(torch.int32).unbind(-3)
    luma = (red * _LUMA_WEIGHTS[0] + green * _LUMA_WEIGHTS[1] + blue * _LUMA_WEIGHTS[2] + 0x8000) >> 16
    return luma.to(torch.uint8).unsqueeze(-3)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert uint8 ``[N, C, H, W]`` images between grayscale (1) and RGB (3) channels."""
    current = images.shape[1]
    if current == channels:
        return images
    if current == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if current == 3 and channels == 1:
        if len(images) == 0:
            return images[:, :1].contiguous()
        return torch.cat([rgb_to_luma(chunk) for chunk in images.split(_CHUNK)])
    raise ValueError(f"cannot convert {current}-channel images to {channels} channels")


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``[C, H, W]`` (or ``[N, C, H, W]``) to ``size x size``, antialiased bilinear."""
    if image.shape[-2:] == (size, size):
        return image
    return F.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 ``[N, C, H, W]`` batch to ``size x size`` in chunks (bounded memory)."""
    if images.shape[-2:] == (size, size):
        return images
    if len(images) == 0:
        return images.new_zeros((0, images.shape[1], size, size))
    return torch.cat([resize_image(chunk, size) for chunk in images.split(_CHUNK)]).contiguous()


def pad_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad uint8 ``[N, C, H, W]`` symmetrically to ``size x size`` (e.g. Fashion-MNIST 28 -> 32 with
    2 black pixels per side, the convention of the FID benchmark), keeping the content unscaled."""
    height, width = images.shape[-2:]
    if size < height or size < width:
        raise ValueError(f"data.pad_to={size} is smaller than the images ({height}x{width})")
    top, left = (size - height) // 2, (size - width) // 2
    return torch.nn.functional.pad(images, (left, size - width - left, top, size - height - top))
