"""Decoding image files (from a folder or a zip) into one preallocated uint8 array.

Every image is decoded exactly once, straight into its slot of an ``[N, C, H, W]`` array. Images must
agree in size and channel count unless ``data.image_size`` / ``data.channels`` say what to convert
them to, in which case each image is converted as it is decoded (so a folder of mixed photos never has
to fit in memory at native size). Problems are reported with the file's name: a corrupt file either
stops the load or, with ``data.skip_corrupt``, is skipped and counted.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dreamdata.data.pixels import resize_image
from dreamdata.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PROGRESS_THRESHOLD = 2000  # show a progress bar when decoding more images than this
RESIZE_BATCH = 256  # images resized together at decode time
_GRAYSCALE_MODES = ("1", "L", "LA", "La")


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the accepted image extensions (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class DecodeOptions:
    """What each image is converted to while decoding; ``None`` keeps the image's own value."""

    image_size: Optional[int] = None
    channels: Optional[int] = None
    skip_corrupt: bool = False


class UnsupportedMode(Exception):
    """An image decoded fine but its pixel mode has no sensible uint8 conversion."""


def decode_image(data: bytes, channels: Optional[int]) -> tuple[np.ndarray, str]:
    """Decode image bytes to uint8 ``[H, W, C]`` and return it with the image's PIL mode.

    ``channels`` 1 or 3 converts (grayscale via PIL's ITU-R 601 ``"L"``); ``None`` keeps grayscale
    images grayscale and turns everything else (palette, RGBA, CMYK...) into RGB.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        mode = image.mode
        target = channels or (1 if mode in _GRAYSCALE_MODES or mode.startswith("I;16") else 3)
        if mode.startswith("I;16"):  # 16-bit grayscale PNG: keep the high byte
            pixels = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)[:, :, None]
            return (pixels if target == 1 else np.repeat(pixels, 3, axis=2)), mode
        if mode in ("I", "F"):
            raise UnsupportedMode(f"{mode!r} (32-bit) pixels")
        pixels = np.asarray(image.convert("L" if target == 1 else "RGB"))
    return pixels.reshape(pixels.shape[0], pixels.shape[1], target), mode


class ImageCollector:
    """Decodes images one by one into a preallocated ``[count, C, H, W]`` array.

    ``where`` describes the container (``"folder /x/train"``) for messages; ``add`` takes each file's
    display name, bytes and label; ``finish`` returns the tensors and warns about skipped files.
    """

    def __init__(self, count: int, options: DecodeOptions, where: str):
        self.count = count
        self.options = options
        self.where = where
        self.skipped: list[str] = []
        self._buffer: Optional[np.ndarray] = None  # allocated once the first image fixes C, H, W
        self._labels = np.empty(count, dtype=np.int64)
        self._filled = 0
        self._first: tuple[str, str, tuple[int, int]] = ("", "", (0, 0))  # name, mode, native size
        self._pending: list[tuple[int, np.ndarray]] = []  # (slot, HWC pixels) waiting to be resized
        self._progress = tqdm(total=count, desc=f"decoding {where}", unit="img", leave=False,
                              disable=count <= PROGRESS_THRESHOLD)

    def add(self, name: str, data: bytes, label: int) -> None:
        self._progress.update(1)
        try:
            pixels, mode = decode_image(data, self.options.channels)
        except UnsupportedMode as error:
            raise DataError(f"{name}: unsupported image mode {error}; save it as 8-bit grayscale or RGB") from None
        except Exception as error:  # PIL raises many types for corrupt files; all mean "unreadable"
            if self.options.skip_corrupt:
                self.skipped.append(name)
                return
            raise DataError(f"{name}: unreadable or corrupt image ({type(error).__name__}: {error}); "
                            "fix or delete it, or set data.skip_corrupt=true to skip such files") from None
        height, width, channels = pixels.shape
        if self._buffer is None:
            size = (self.options.image_size,) * 2 if self.options.image_size else (height, width)
            self._buffer = np.empty((self.count, channels, *size), dtype=np.uint8)
            self._first = (name, mode, (height, width))
        elif channels != self._buffer.shape[1] or (
                self.options.image_size is None and (height, width) != self._buffer.shape[2:]):
            self._raise_mismatch(name, mode, (height, width), channels)
        slot = self._filled
        self._labels[slot] = label
        self._filled += 1
        if (height, width) == self._buffer.shape[2:]:
            self._buffer[slot] = pixels.transpose(2, 0, 1)
            return
        # Resizing image by image costs more than decoding; queue same-shaped images and resize in batches.
        if self._pending and self._pending[0][1].shape != pixels.shape:
            self._resize_pending()
        self._pending.append((slot, pixels))
        if len(self._pending) >= RESIZE_BATCH:
            self._resize_pending()

    def _resize_pending(self) -> None:
        if not self._pending:
            return
        slots = [slot for slot, _ in self._pending]
        batch = torch.from_numpy(np.stack([pixels for _, pixels in self._pending])).permute(0, 3, 1, 2)
        self._buffer[slots] = resize_image(batch.contiguous(), self.options.image_size).numpy()
        self._pending.clear()

    def _raise_mismatch(self, name: str, mode: str, native_size: tuple[int, int], channels: int) -> None:
        first_name, first_mode, first_size = self._first
        if channels != self._buffer.shape[1]:
            raise DataError(f"{self.where}: images have different channel counts: {first_name} is "
                            f"{first_mode} ({self._buffer.shape[1]} channel(s)), {name} is {mode} ({channels}); "
                            "set data.channels=1 or data.channels=3 to convert them all")
        raise DataError(f"{self.where}: images have different sizes: {first_name} is "
                        f"{first_size[0]}x{first_size[1]}, {name} is {native_size[0]}x{native_size[1]} "
                        "(height x width); set data.image_size to resize them all to one square size")

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded images uint8 ``[n, C, H, W]`` and labels int64 ``[n]`` (n = count - skipped)."""
        self._progress.close()
        self._resize_pending()
        if self._buffer is None:
            raise DataError(f"{self.where}: none of the {self.count} image files could be decoded "
                            f"(e.g. {self.skipped[0] if self.skipped else '?'})")
        if self.skipped:
            warn_skipped(self.where, self.skipped)
        images = torch.from_numpy(self._buffer[: self._filled])
        labels = torch.from_numpy(self._labels[: self._filled])
        return images, labels


def warn_skipped(where: str, skipped: list[str]) -> None:
    """Report how many unreadable files were skipped (data.skip_corrupt), naming a few."""
    examples = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    warnings.warn(f"{where}: skipped {len(skipped)} unreadable image file(s): {examples}", stacklevel=3)
