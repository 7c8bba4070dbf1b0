"""Datasets stored as image files, one sub-folder per class, in a directory or a zip archive.

Layout (``<class>`` folder names, sorted, are the class names)::

    PATH/<class>/<image>.png                      one split only (the training split)
    PATH/train/<class>/...  PATH/test/<class>/...  both splits

Inside a zip the same layout applies, and a single top-level folder (``cifar10/`` or ``train/``) is
descended into automatically. Decoded zips are cached (see :mod:`dreamdata.data.decode_cache`);
folders are not, because their modification time does not reflect changes to the files inside.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path, PurePosixPath

from dreamdata.data import decode_cache
from dreamdata.data.decode import IMAGE_EXTENSIONS, DecodeOptions, ImageCollector, is_image_name, warn_skipped
from dreamdata.data.image_data import ImageData
from dreamdata.errors import DataError

SPLITS = ("train", "test")
_EXTENSIONS_TEXT = ", ".join(IMAGE_EXTENSIONS)


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


# ---------------------------------------------------------------------------------------------------
# Folders


def _folder_split(root: Path, split: str) -> Path:
    """The directory holding ``split``'s class folders: ``root/<split>`` or ``root`` itself."""
    present = [name for name in SPLITS if (root / name).is_dir()]
    if present:
        if split not in present:
            raise DataError(f"folder {root}: has a {present[0]}/ sub-folder but no {split}/ sub-folder")
        return root / split
    if split != "train":
        raise DataError(f"folder {root}: no {split}/ sub-folder, so there is no {split} split (for both "
                        f"splits use {root}/train/<class>/<image> and {root}/test/<class>/<image>)")
    return root


def load_image_folder(root: Path, split: str, options: DecodeOptions) -> ImageData:
    """Decode every image of ``root`` (or ``root/<split>``), labelled by class sub-folder."""
    if not root.exists():
        raise DataError(f"folder {root}: no such directory")
    if not root.is_dir():
        raise DataError(f"folder {root}: not a directory (expected one sub-folder of images per class)")
    directory = _folder_split(root, split)
    class_dirs = sorted(path for path in directory.iterdir() if path.is_dir() and not _is_hidden(path.name))
    if not class_dirs:
        raise DataError(f"folder {directory}: no class sub-folders (expected {directory}/<class name>/<image>, "
                        f"images ending in {_EXTENSIONS_TEXT})")
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(path for path in class_dir.iterdir()
                        if path.is_file() and is_image_name(path.name) and not _is_hidden(path.name))
        if not images:
            raise DataError(f"folder {class_dir}: no images in this class folder (expected files ending in "
                            f"{_EXTENSIONS_TEXT})")
        files.extend((path, label) for path in images)

    collector = ImageCollector(len(files), options, f"folder {directory}")
    for path, label in files:
        try:
            data = path.read_bytes()
        except OSError as error:
            if not options.skip_corrupt:
                raise DataError(f"{path}: cannot read file ({error.strerror or error})") from None
            collector.skipped.append(str(path))
            continue
        collector.add(str(path), data, label)
    images, labels = collector.finish()
    return ImageData(images, labels, [path.name for path in class_dirs], f"folder {directory} ({split})")


# ---------------------------------------------------------------------------------------------------
# Zip archives


def _zip_prefix(archive: Path, image_paths: list[tuple[str, ...]], split: str) -> tuple[str, ...]:
    """The folder inside the zip whose sub-folders are ``split``'s classes, judged from the image paths."""
    prefix: tuple[str, ...] = ()
    while True:
        relative = [parts[len(prefix):] for parts in image_paths if parts[:len(prefix)] == prefix]
        tops = {parts[0] for parts in relative if len(parts) > 1}
        splits_here = sorted(tops & set(SPLITS))
        if splits_here:
            if split not in splits_here:
                inside = "/".join(prefix + (splits_here[0],))
                raise DataError(f"zip {archive}: has {inside}/ but no {split}/ folder, so there is no {split} "
                                "split in this archive")
            return prefix + (split,)
        if len(tops) == 1 and all(len(parts) >= 3 for parts in relative):
            prefix += (next(iter(tops)),)
            continue
        if split != "train":
            raise DataError(f"zip {archive}: no {split}/ folder, so there is no {split} split (for both splits "
                            "use train/<class>/<image> and test/<class>/<image> inside the zip)")
        return prefix


def zip_listing(archive: Path, handle: zipfile.ZipFile, split: str):
    """Class names and ``(member, label)`` pairs of ``split``, sorted by class then file name."""
    members = [(info, PurePosixPath(info.filename).parts) for info in handle.infolist()]
    members = [(info, parts) for info, parts in members if parts and not any(_is_hidden(p) for p in parts)]
    images = [(info, parts) for info, parts in members if not info.is_dir() and is_image_name(parts[-1])]
    if not images:
        raise DataError(f"zip {archive}: contains no images (expected <class name>/<image> entries, images "
                        f"ending in {_EXTENSIONS_TEXT})")
    prefix = _zip_prefix(archive, [parts for _, parts in images], split)
    inside = "/".join(prefix) + "/" if prefix else ""
    by_class: dict[str, list[zipfile.ZipInfo]] = {}
    for info, parts in members:  # every folder under the prefix is a class, even one without images
        relative = parts[len(prefix):]
        if parts[:len(prefix)] == prefix and (len(relative) >= 2 or (len(relative) == 1 and info.is_dir())):
            by_class.setdefault(relative[0], [])
    for info, parts in images:
        relative = parts[len(prefix):]
        if parts[:len(prefix)] == prefix and len(relative) == 2:
            by_class[relative[0]].append(info)
    if not by_class:
        raise DataError(f"zip {archive}: no class folders under {inside or 'the top level'} (expected "
                        f"{inside}<class name>/<image>, images ending in {_EXTENSIONS_TEXT})")
    class_names = sorted(by_class)
    for name in class_names:
        if not by_class[name]:
            raise DataError(f"zip {archive}: class folder {inside}{name}/ has no images (expected files ending "
                            f"in {_EXTENSIONS_TEXT})")
    pairs = [(info, label) for label, name in enumerate(class_names)
             for info in sorted(by_class[name], key=lambda info: info.filename)]
    return class_names, pairs


def _read_member(handle: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return handle.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise _UnreadableMember(str(error)) from None


class _UnreadableMember(Exception):
    """A zip member whose compressed bytes cannot be read (bad CRC, truncated...)."""


def _decode_zip(archive: Path, split: str, options: DecodeOptions) -> decode_cache.CachedDecode:
    try:
        with zipfile.ZipFile(archive) as handle:
            class_names, pairs = zip_listing(archive, handle, split)
            collector = ImageCollector(len(pairs), options, f"zip {archive}")
            for info, label in pairs:
                name = f"{archive}:{info.filename}"
                try:
                    data = _read_member(handle, info)
                except _UnreadableMember as error:
                    if not options.skip_corrupt:
                        raise DataError(f"{name}: cannot read this zip member ({error}); set "
                                        "data.skip_corrupt=true to skip such files") from None
                    collector.skipped.append(name)
                    continue
                collector.add(name, data, label)
            images, labels = collector.finish()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as error:
        raise DataError(f"zip {archive}: cannot read the archive ({error})") from None
    return decode_cache.CachedDecode(images, labels, class_names, collector.skipped)


def load_image_zip(archive: Path, split: str, options: DecodeOptions, cache_dir: Path) -> ImageData:
    """Decode ``split`` of a zip of class folders, reusing the decode cache in ``cache_dir``."""
    if not archive.exists():
        raise DataError(f"zip {archive}: no such file")
    if archive.is_dir() or not zipfile.is_zipfile(archive):
        raise DataError(f"zip {archive}: not a zip archive (expected a .zip of <class>/<image> folders)")
    cached_at = decode_cache.cache_file(cache_dir, archive, split, options)
    decoded = decode_cache.load_cached(cached_at)
    if decoded is None:
        decoded = _decode_zip(archive, split, options)
        decode_cache.save_cached(cached_at, decoded)
    elif decoded.skipped:
        warn_skipped(f"zip {archive}", decoded.skipped)
    return ImageData(decoded.images, decoded.labels, decoded.class_names, f"zip {archive} ({split})")

