"""Read a dreamed (or any synthetic) dataset and check that it fits the real dataset it is to join.

A synthetic set is a ``dreamdata dream`` directory (its ``dataset.npz``, else its image folder, with the
manifest mapping folder names back to class names), a plain image folder (one sub-folder per class), or an
``.npz`` file. Before a classifier sees it beside real data it must have the real data's classes (matched
by name, so the label order may differ), the same image size and channel count, and at least one image per
class; a dream directory must be complete and, when the caller knows which model it expects, come from
that model. Each mismatch is a :class:`~dreamdata.errors.DataError` naming what differs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dreamdata.data.decode import DecodeOptions
from dreamdata.data.image_data import ImageData
from dreamdata.data.image_files import load_image_folder
from dreamdata.data.sources import load_npz
from dreamdata.dream.manifest import MANIFEST, read_manifest
from dreamdata.dream.writer import DATASET_NPZ
from dreamdata.errors import DataError
from dreamdata.sampling.saving import class_directory_names


def _read(path: Path, expect_checkpoint_sha256: str | None) -> tuple[ImageData, list[str], dict | None]:
    """The synthetic images and their class names (as the real dataset would spell them), plus the manifest."""
    if path.is_file():
        data = load_npz(path)
        return data, list(data.class_names), None
    if not path.is_dir():
        raise DataError(f"synthetic {path}: no such directory or .npz file")
    manifest = read_manifest(path)
    if manifest is None:
        data = load_image_folder(path, "train", DecodeOptions())
        return data, list(data.class_names), None
    if manifest.get("status") != "complete":
        raise DataError(f"synthetic {path}: the dream run is incomplete ({path / MANIFEST} says status "
                        f"{manifest.get('status')!r}); re-run the same `dreamdata dream` command to finish it")
    stored = manifest["spec"].get("checkpoint_sha256")
    if expect_checkpoint_sha256 is not None and stored != expect_checkpoint_sha256:
        raise DataError(f"synthetic {path}: {MANIFEST} says it was dreamed by checkpoint "
                        f"{manifest['spec'].get('checkpoint')} (sha256 {stored[:12]}...), not by the expected model "
                        f"(sha256 {expect_checkpoint_sha256[:12]}...)")
    if (path / DATASET_NPZ).is_file():
        data = load_npz(path / DATASET_NPZ)
        return data, list(data.class_names), manifest
    data = load_image_folder(path, "train", DecodeOptions())
    class_dirs = manifest.get("class_dirs", {})
    return data, [class_dirs.get(name, name) for name in data.class_names], manifest


def load_synthetic(path: str | Path, real: ImageData,
                   expect_checkpoint_sha256: str | None = None) -> tuple[ImageData, dict | None]:
    """The synthetic dataset at ``path`` relabelled into ``real``'s class indices, and its manifest (if any)."""
    path = Path(path).expanduser()
    data, names, manifest = _read(path, expect_checkpoint_sha256)
    # plain folders spell class names as directory names (T-shirt/top -> T-shirt_top): accept either
    spelled = dict(zip(class_directory_names(real.class_names), real.class_names))
    names = [name if name in real.class_names else spelled.get(name, name) for name in names]
    missing = [name for name in real.class_names if name not in names]
    extra = [name for name in names if name not in real.class_names]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"not in the real data {extra}"] if extra else [])
        raise DataError(f"synthetic {path}: its classes do not match the real dataset's ({real.source}): "
                        f"{'; '.join(parts)}")
    if data.images.shape[1:] != real.images.shape[1:]:
        c, h, w = data.images.shape[1:]
        rc, rh, rw = real.images.shape[1:]
        raise DataError(f"synthetic {path}: images are {c}-channel {h}x{w}, the real images {rc}-channel {rh}x{rw} "
                        "(dream from a model trained on the same image size and channels)")
    mapping = torch.tensor([real.class_names.index(name) for name in names], dtype=torch.long)
    labels = mapping[data.labels]
    counts = torch.bincount(labels, minlength=real.num_classes)
    empty = [real.class_names[c] for c in range(real.num_classes) if counts[c] == 0]
    if empty:
        raise DataError(f"synthetic {path}: no images of class(es) {empty}")
    return ImageData(data.images, labels, list(real.class_names), f"synthetic {path}"), manifest
