"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random augmentation ``T`` is applied to real and generated images before D sees them,
``D(T(x))`` and ``D(T(G(z)))``, in both the D and the G step. Every ``T`` here is differentiable with
respect to the images, so G's gradient flows back through it; that is what lets a GAN train on a few
thousand images without D memorising them and without the augmentations leaking into G's samples.

Images are ``[B, C, H, W]`` in [-1, 1] with 1 or 3 channels. Each policy draws one set of parameters
per example from ``generator`` (torch's global RNG when it is ``None``):

* ``color`` - brightness ``x + b``, b ~ U(-0.5, 0.5); saturation ``(x - m_pixel) * s + m_pixel``,
  s ~ U(0, 2), ``m_pixel`` the mean over channels at each pixel (the identity on 1-channel images);
  contrast ``(x - m_image) * c + m_image``, c ~ U(0.5, 1.5), ``m_image`` the image's mean;
* ``translation`` - an integer shift of up to ``r = round(H / 8)`` rows and ``round(W / 8)`` columns
  in either direction (uniform on ``-r..r``), vacated pixels set to 0;
* ``cutout`` - one square of side ``round(H / 2)`` x ``round(W / 2)`` set to 0, centred at a pixel
  drawn uniformly over the image and clipped at the borders.

Rounding is half-up (``int(size * ratio + 0.5)``), as in the reference code. Following the reference,
the policies are one function each and :data:`POLICIES` names them.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from dreamdata.process.rng import check_generator

__all__ = ["POLICIES", "parse_policy", "diff_augment"]

TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2


def _uniform(images: torch.Tensor, low: float, high: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One draw ``U(low, high)`` per example, shaped ``[B, 1, 1, 1]`` to broadcast over the image."""
    u = torch.rand((images.shape[0], 1, 1, 1), generator=generator, device=images.device, dtype=images.dtype)
    return low + (high - low) * u


def _integers(images: torch.Tensor, low: int, high: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One integer uniform on ``low..high`` (inclusive) per example, shaped ``[B]``."""
    return torch.randint(low, high + 1, (images.shape[0],), generator=generator, device=images.device)


def _scaled(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def color(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random brightness, then saturation, then contrast (see the module docstring)."""
    images = images + _uniform(images, -0.5, 0.5, generator)
    pixel_mean = images.mean(dim=1, keepdim=True)
    images = (images - pixel_mean) * _uniform(images, 0.0, 2.0, generator) + pixel_mean
    image_mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - image_mean) * _uniform(images, 0.5, 1.5, generator) + image_mean


def translation(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Shift each image by whole pixels: ``out[i, j] = x[i - dy, j - dx]``, 0 where that falls outside."""
    batch, channels, height, width = images.shape
    ry, rx = _scaled(height, TRANSLATION_RATIO), _scaled(width, TRANSLATION_RATIO)
    dy = _integers(images, -ry, ry, generator)
    dx = _integers(images, -rx, rx, generator)
    # Zero-pad by the largest shift, then gather rows and columns: pixel (i, j) of the output reads padded
    # pixel (i - dy + ry, j - dx + rx), which is always inside the padded image.
    padded = F.pad(images, (rx, rx, ry, ry))
    device = images.device
    rows = torch.arange(height, device=device)[None, :] - dy[:, None] + ry  # [B, H]
    cols = torch.arange(width, device=device)[None, :] - dx[:, None] + rx  # [B, W]
    padded = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, width + 2 * rx))
    return padded.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def cutout(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero one (border-clipped) square per image, centred at a uniformly drawn pixel."""
    _, _, height, width = images.shape
    side_y, side_x = _scaled(height, CUTOUT_RATIO), _scaled(width, CUTOUT_RATIO)
    top = _integers(images, 0, height - 1, generator) - side_y // 2
    left = _integers(images, 0, width - 1, generator) - side_x // 2
    rows = torch.arange(height, device=images.device)[None, :]
    cols = torch.arange(width, device=images.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side_y)  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side_x)  # [B, W]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return images * keep[:, None].to(images.dtype)


POLICIES: dict[str, Callable[..., torch.Tensor]] = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> ``("color", "translation", "cutout")``; ``"none"`` or ``""`` -> ``()``."""
    if text.strip() in ("", "none"):
        return ()
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r} in {text!r}; known policies: "
                             f"{', '.join(POLICIES)} (or 'none')")
    return names


def diff_augment(images: torch.Tensor, policy: Sequence[str] | str,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Apply the named policies to ``images`` in order; an empty policy (or ``"none"``) returns ``images``."""
    names = parse_policy(policy) if isinstance(policy, str) else tuple(policy)
    if not names:
        return images
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r}; known policies: {', '.join(POLICIES)}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"DiffAugment expects images [batch, 1 or 3, height, width], got {list(images.shape)}")
    check_generator(generator, images.device)
    for name in names:
        images = POLICIES[name](images, generator)
    return images
