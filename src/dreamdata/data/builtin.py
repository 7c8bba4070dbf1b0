"""The standard datasets by name: mnist, fashion-mnist, cifar10, cifar100.

MNIST and Fashion-MNIST are first looked for as IDX files already on disk (for Fashion-MNIST: the
folder in ``$DREAMDATA_FASHION_MNIST_DIR``, else the Debian package's ``/usr/share/datasets/fashion-mnist``,
then ``<data_root>/FashionMNIST/raw``), so an offline machine with the files needs no download.
Otherwise torchvision's dataset classes fetch them into ``data_root``. Either way the whole split is
converted to tensors directly from the arrays, never image by image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dreamdata.data.idx import read_idx
from dreamdata.data.image_data import ImageData
from dreamdata.errors import DataError

FASHION_MNIST_ENV = "DREAMDATA_FASHION_MNIST_DIR"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
MNIST_CLASSES = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                 "7 - seven", "8 - eight", "9 - nine"]  # as torchvision.datasets.MNIST.classes

# dataset name -> torchvision.datasets class name
TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10",
                       "cifar100": "CIFAR100"}
_IDX_CLASS_NAMES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
_IDX_PREFIX = {"train": "train", "test": "t10k"}


def idx_search_dirs(name: str, data_root: Path) -> list[Path]:
    """Folders searched, in order, for the IDX files of ``mnist`` or ``fashion-mnist``."""
    raw = data_root / TORCHVISION_CLASSES[name] / "raw"
    if name == "fashion-mnist":
        configured = os.environ.get(FASHION_MNIST_ENV)
        return [Path(configured).expanduser() if configured else FASHION_MNIST_SYSTEM_DIR, raw]
    return [raw]


def _existing(directory: Path, stem: str) -> Optional[Path]:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(directories: list[Path], split: str) -> Optional[tuple[Path, Path]]:
    """The first folder's ``(images, labels)`` IDX files for ``split`` (``.gz`` or plain), if any."""
    prefix = _IDX_PREFIX[split]
    for directory in directories:
        images = _existing(directory, f"{prefix}-images-idx3-ubyte")
        labels = _existing(directory, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            return images, labels
    return None


def load_idx_pair(images_path: Path, labels_path: Path, class_names: list[str], source: str) -> ImageData:
    """Read an images/labels IDX pair into ImageData, checking that they belong together."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: expected {len(images)} labels to match {images_path}, "
                        f"got shape {list(labels.shape)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
        raise DataError(f"{labels_path}: labels must be in 0..{len(class_names) - 1}, "
                        f"found {int(labels.min())}..{int(labels.max())}")
    return ImageData(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                     list(class_names), source)


def _how_to_get(name: str, data_root: Path, looked_in: list[Path]) -> str:
    advice = f"connect to the internet once so torchvision can download it into {data_root}"
    if name == "fashion-mnist":
        advice = (f"install the Debian package (apt-get install dataset-fashion-mnist), set {FASHION_MNIST_ENV} "
                  "to a folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                  f"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, or {advice}")
    where = f"looked for IDX files in {', '.join(map(str, looked_in))}; " if looked_in else ""
    return f"{where}to get it: {advice}"


def _download_torchvision(name: str, data_root: Path, split: str, looked_in: list[Path]):
    """The torchvision dataset object, from ``data_root`` or freshly downloaded there."""
    import torchvision.datasets  # imported here: only needed when files must come through torchvision

    dataset_class = getattr(torchvision.datasets, TORCHVISION_CLASSES[name])
    train = split == "train"
    try:
        return dataset_class(str(data_root), train=train, download=False)
    except Exception:  # not there yet (or damaged): download
        pass
    try:
        return dataset_class(str(data_root), train=train, download=True)
    except Exception as error:
        raise DataError(f"{name}: could not load or download the {split} split into {data_root} "
                        f"({type(error).__name__}: {error}); {_how_to_get(name, data_root, looked_in)}") from None


def load_builtin(name: str, data_root: Path, split: str) -> ImageData:
    """Load ``split`` ("train"/"test") of a standard dataset by ``name`` (see TORCHVISION_CLASSES)."""
    source = f"{name} ({split})"
    looked_in: list[Path] = []
    if name in _IDX_CLASS_NAMES:
        looked_in = idx_search_dirs(name, data_root)
        configured = os.environ.get(FASHION_MNIST_ENV)
        found = find_idx_files(looked_in, split)
        if found:
            return load_idx_pair(*found, _IDX_CLASS_NAMES[name], source)
        if name == "fashion-mnist" and configured:
            warnings.warn(f"{FASHION_MNIST_ENV}={configured} holds no Fashion-MNIST {split} IDX files; "
                          "falling back to a torchvision download", stacklevel=2)

    dataset = _download_torchvision(name, data_root, split, looked_in)
    data = torch.as_tensor(np.asarray(dataset.data))
    images = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return ImageData(images.contiguous(), labels, list(dataset.classes), source)
