"""``load_dataset``: from a ``data.dataset`` spec to the ImageData a run trains on.

A spec is a standard dataset name (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``) or
``KIND:PATH`` with KIND one of ``folder``, ``zip``, ``npz``. After loading, the DataConfig options are
applied in a fixed order: class subset, per-class cap, channel conversion, resize. The order matters
for reproducibility: ``per_class`` picks among the selected classes only, with ``split_seed``.
"""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dreamdata.config import DataConfig
from dreamdata.data.builtin import TORCHVISION_CLASSES, load_builtin
from dreamdata.data.decode import DecodeOptions
from dreamdata.data.image_data import ImageData, cap_per_class, select_classes
from dreamdata.data.image_files import SPLITS, load_image_folder, load_image_zip
from dreamdata.data.pixels import convert_channels, pad_images, resize_images
from dreamdata.errors import DataError

PATH_KINDS = ("folder", "zip", "npz")
VALID_FORMS = ", ".join([*TORCHVISION_CLASSES, *(f"{kind}:PATH" for kind in PATH_KINDS)])


# Whether a random horizontal flip keeps an image's label: yes for clothes and natural photographs; no for
# digits (a mirrored 2 or 7 is no digit) and, unless asked, for the user's own data (text, handwriting, road
# signs, anything chiral).
HFLIP_DEFAULTS = {"mnist": False, "fashion-mnist": True, "cifar10": True, "cifar100": True}


def default_hflip(spec: str) -> bool:
    """The horizontal-flip default of dataset ``spec``: :data:`HFLIP_DEFAULTS`, off for every path kind."""
    kind, _ = parse_spec(spec)
    return HFLIP_DEFAULTS.get(kind, False)


def resolve_hflip(hflip: Optional[bool], spec: str) -> bool:
    """``hflip`` when given (true/false), else the dataset's default (``None`` = "dataset default")."""
    return default_hflip(spec) if hflip is None else bool(hflip)


def describe_hflip(hflip: Optional[bool], spec: str) -> str:
    """One phrase for summaries: ``"on (the default for fashion-mnist)"``, ``"off (asked)"``..."""
    state = "on" if resolve_hflip(hflip, spec) else "off"
    if hflip is not None:
        return f"{state} (asked)"
    kind, _ = parse_spec(spec)
    return f"{state} (the default for {kind if kind in HFLIP_DEFAULTS else kind + ':'} data)"


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a dataset spec into ``(kind, argument)``: ``("fashion-mnist", "")`` or ``("zip", "/x.zip")``."""
    text = spec.strip()
    name = text.lower().replace("_", "-")
    if name in TORCHVISION_CLASSES:
        return name, ""
    kind, colon, argument = text.partition(":")
    if colon and kind.lower() in PATH_KINDS:
        if not argument.strip():
            raise DataError(f"data.dataset {spec!r}: missing PATH after {kind}:")
        return kind.lower(), argument.strip()
    hint = ""
    path = Path(text).expanduser()
    if path.is_dir():
        hint = f" (to use this directory write folder:{text})"
    elif path.suffix.lower() in (".zip", ".npz") and path.exists():
        hint = f" (to use this file write {path.suffix.lower()[1:]}:{text})"
    raise DataError(f"data.dataset {spec!r}: unknown dataset; expected one of {VALID_FORMS}{hint}")


def load_npz(path: Path, allow_empty_classes: bool = False) -> ImageData:
    """Images and labels from an ``.npz`` with keys ``images``, ``labels`` and optionally ``class_names``.

    ``images`` is uint8 ``[N, H, W]`` (grayscale) or ``[N, H, W, C]`` with C 1 or 3. ``labels`` are
    ``0 .. K-1``, with K the number of ``class_names``, or without them the number of distinct labels
    (the classes are then named ``"0" .. "K-1"``). Every class needs an image, as in an image folder, unless
    ``allow_empty_classes`` (a set of samples of some classes only). The same file serves whichever split
    is asked.
    """
    if not path.exists():
        raise DataError(f"npz {path}: no such file")
    if not path.is_file():
        raise DataError(f"npz {path}: not a file (expected numpy.savez output)")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle and complain about object data
        with open(path, "rb") as handle:
            is_npy = handle.read(6) == b"\x93NUMPY"
        what = "a single .npy array" if is_npy else "not an npz file"
        raise DataError(f"npz {path}: {what}; expected numpy.savez output (a zip of arrays images, labels and "
                        "optionally class_names)")
    try:
        with np.load(path, allow_pickle=False) as stored:
            keys = sorted(stored.files)
            missing = [key for key in ("images", "labels") if key not in keys]
            if missing:
                raise DataError(f"npz {path}: missing key(s) {', '.join(missing)}; found keys {keys}, expected "
                                "images (uint8 [N,H,W] or [N,H,W,C]), labels (int [N]), optional class_names")
            images, labels = stored["images"], stored["labels"]
            names = [str(name) for name in stored["class_names"]] if "class_names" in keys else None
    except DataError:
        raise
    except Exception as error:  # not a zip / damaged / object arrays needing pickle
        raise DataError(f"npz {path}: not a readable .npz file ({type(error).__name__}: {error}); "
                        "expected numpy.savez output with plain (non-object) arrays") from None

    if images.dtype != np.uint8:
        raise DataError(f"npz {path}: images must be uint8 (0..255), got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"npz {path}: images must be [N, H, W] or [N, H, W, C] with C 1 or 3 (channels last), "
                        f"got shape {list(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"npz {path}: labels must be integers of shape [{len(images)}] to match images, "
                        f"got {labels.dtype} {list(labels.shape)}")
    names = _npz_class_names(path, labels, names, allow_empty_classes)
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return ImageData(tensor, torch.from_numpy(labels.astype(np.int64)), names, f"npz {path}")


def _npz_class_names(path: Path, labels: np.ndarray, names: list[str] | None, allow_empty: bool) -> list[str]:
    """The class names of an npz's ``labels``, checking they are ``0 .. K-1`` (K from ``names``, else the
    number of distinct labels) before anything is sized by them: one label of 10**9 must not build a
    10**9-class model."""
    if len(labels) and labels.min() < 0:
        raise DataError(f"npz {path}: labels must be >= 0, found {int(labels.min())}")
    present = np.unique(labels)
    count = len(names) if names is not None else len(present)
    source = f"{count} class_names" if names is not None else f"{count} distinct labels (no class_names)"
    outside = present[present >= count]
    if len(outside):
        shown = ", ".join(str(int(label)) for label in outside[:5]) + (", ..." if len(outside) > 5 else "")
        raise DataError(f"npz {path}: labels must be 0..{count - 1} for its {source}, found label(s) {shown}")
    if names is None:
        return [str(index) for index in range(count)]
    empty = np.setdiff1d(np.arange(count), present)
    if len(empty) and not allow_empty:
        shown = [names[int(label)] for label in empty[:5]]
        raise DataError(f"npz {path}: no images of class(es) {shown}{' ...' if len(empty) > 5 else ''} (labels "
                        f"{', '.join(str(int(label)) for label in empty[:5])}); every class in class_names needs "
                        "at least one image")
    return names


def _check_options(config: DataConfig) -> None:
    if config.image_size is not None and config.image_size < 1:
        raise DataError(f"data.image_size: expected a positive integer or null, got {config.image_size}")
    if config.channels not in (None, 1, 3):
        raise DataError(f"data.channels: expected 1, 3 or null, got {config.channels}")


def load_raw(config: DataConfig, split: str) -> ImageData:
    """The dataset named by ``config.dataset``, before any class subset, cap or conversion."""
    kind, argument = parse_spec(config.dataset)
    data_root = Path(config.data_root).expanduser()
    if kind in TORCHVISION_CLASSES:
        return load_builtin(kind, data_root, split)
    path = Path(argument).expanduser()
    options = DecodeOptions(config.image_size, config.channels, config.skip_corrupt)
    if kind == "folder":
        return load_image_folder(path, split, options)
    if kind == "zip":
        return load_image_zip(path, split, options, data_root / "cache")
    return load_npz(path)


def load_dataset(config: DataConfig, split: str = "train") -> ImageData:
    """Load ``split`` ("train" or "test") of ``config.dataset`` with the config's selection and conversions."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    _check_options(config)
    data = load_raw(config, split)
    if config.classes is not None:
        data = select_classes(data, config.classes)
        data.source += f", classes {', '.join(data.class_names)}"
    if config.per_class is not None:
        data = cap_per_class(data, config.per_class, config.split_seed)
        data.source += f", at most {config.per_class} per class"
    if config.channels is not None:
        data = replace(data, images=convert_channels(data.images, config.channels))
    if config.image_size is not None:
        data = replace(data, images=resize_images(data.images, config.image_size))
    if config.pad_to is not None:
        try:
            data = replace(data, images=pad_images(data.images, config.pad_to))
        except ValueError as error:
            raise DataError(f"{config.dataset}: {error}") from None
    return data
