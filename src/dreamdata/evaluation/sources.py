"""Where the images being evaluated come from: a reference dataset split, or a folder/npz of samples."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dreamdata.config import DataConfig
from dreamdata.data import load_dataset
from dreamdata.data.sources import load_npz
from dreamdata.errors import DataError
from dreamdata.evaluation.suite import ImageSet, subsample

__all__ = ["load_reference", "load_sample_set", "reference_config"]


def reference_config(data: DataConfig, dataset: Optional[str] = None) -> DataConfig:
    """A run's data config turned into the reference's: same preparation (classes, size, channels,
    padding), but the whole split — no per-class cap — and the dataset replaced when ``dataset`` is given."""
    return dataclasses.replace(data, dataset=dataset or data.dataset, per_class=None, skip_corrupt=False)


def load_reference(data: DataConfig, split: str = "test", count: Optional[int] = None, seed: int = 0) -> ImageSet:
    """``count`` images of ``split`` (a seeded subset, or all of them) prepared as ``data`` says."""
    loaded = load_dataset(data, split)
    if len(loaded) == 0:
        raise DataError(f"reference {data.dataset} ({split}) has no images")
    images, labels = subsample(loaded.images, loaded.labels, count, seed)
    source = f"{loaded.source}, {len(images)} images"
    if count and count < len(loaded):
        source += f" (seeded subset, seed {seed})"
    return ImageSet(images, labels, list(loaded.class_names), source)


def _from_npz(path: Path) -> ImageSet:
    with np.load(path, allow_pickle=False) as archive:
        if "images" not in archive.files:
            raise DataError(f"{path}: no 'images' array (expected the samples.npz that `dreamdata sample` writes)")
        unlabelled = "labels" in archive.files and (archive["labels"] < 0).all()
    if unlabelled:  # unconditional samples: labels are all -1
        with np.load(path, allow_pickle=False) as archive:
            images = archive["images"]
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"{path}: 'images' must be uint8 [N, H, W, C], got {images.dtype} {list(images.shape)}")
        pixels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return ImageSet(pixels, None, [], f"{path} ({len(pixels)} images)")
    data = load_npz(path, allow_empty_classes=True)  # `sample --class A` samples some classes only
    return ImageSet(data.images, data.labels, list(data.class_names), f"{path} ({len(data)} images)")


def load_sample_set(path: str | Path) -> ImageSet:
    """Samples from ``samples.npz`` / ``dataset.npz`` (or a directory holding one, as ``dreamdata sample`` and
    ``dreamdata dream`` write) or from an image folder with one sub-folder per class."""
    path = Path(path).expanduser()
    for name in ("samples.npz", "dataset.npz"):  # `dreamdata sample` / `dreamdata dream` outputs
        if path.is_dir() and (path / name).is_file():
            path = path / name
            break
    if path.is_file() and path.suffix == ".npz":
        return _from_npz(path)
    if path.is_dir():
        data = load_dataset(DataConfig(dataset=f"folder:{path}", hflip=False, val_fraction=0.0), "train")
        return ImageSet(data.images, data.labels, list(data.class_names), f"{path} ({len(data)} images)")
    raise DataError(f"{path}: expected a run directory, a samples.npz (or a directory holding one) or an image "
                    "folder with one sub-folder per class")
