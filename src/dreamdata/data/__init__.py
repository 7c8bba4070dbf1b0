"""Datasets decoded once into memory (uint8 ``[N, C, H, W]`` + labels) and batched on-device.

* :func:`load_dataset` turns a ``data.dataset`` spec (``fashion-mnist``, ``folder:PATH``, ``zip:PATH``,
  ``npz:PATH``...) into an :class:`ImageData`, applying the class subset, per-class cap, channel
  conversion and resize of the :class:`~dreamdata.config.DataConfig`.
* :func:`split_validation` holds out a fixed, stratified validation set.
* :class:`BatchStream` yields the mini-batch of any global step, deterministically, so resumed runs
  see the same batches as uninterrupted ones.
"""

from dreamdata.data.batches import BatchStream
from dreamdata.data.idx import read_idx
from dreamdata.data.image_data import ImageData, cap_per_class, select_classes, split_validation
from dreamdata.data.pixels import convert_channels, resize_images
from dreamdata.data.sources import (
    default_hflip,
    describe_hflip,
    load_dataset,
    load_npz,
    parse_spec,
    resolve_hflip,
)

__all__ = [
    "BatchStream",
    "ImageData",
    "cap_per_class",
    "convert_channels",
    "default_hflip",
    "describe_hflip",
    "load_dataset",
    "load_npz",
    "parse_spec",
    "read_idx",
    "resize_images",
    "resolve_hflip",
    "select_classes",
    "split_validation",
]
