"""On-disk cache of decoded archives, so a zip of 50k JPEGs is decoded once, not on every run.

The cache file is an uncompressed ``.npz`` under ``<data_root>/cache/`` named by a SHA-1 of everything
the decoded result depends on: the archive's absolute path, size and modification time, the split,
and the per-image decode options. Changing the archive (or the options) therefore misses the cache
instead of returning stale images. Files are written atomically, and an unreadable cache file is
ignored (and rewritten), so the cache can never make a load fail.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from dreamdata.atomic import atomic_path
from dreamdata.data.decode import DecodeOptions

CACHE_FORMAT = 1  # bump when the decoded representation changes


def cache_file(cache_dir: Path, archive: Path, split: str, options: DecodeOptions) -> Path:
    """Where the decoded ``split`` of ``archive`` with ``options`` is (or will be) cached."""
    stat = archive.stat()
    key = json.dumps([CACHE_FORMAT, str(archive.resolve()), stat.st_size, stat.st_mtime_ns, split,
                      options.image_size, options.channels, options.skip_corrupt])
    return cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"


class CachedDecode:
    """A decoded split: images uint8 ``[N, C, H, W]``, labels, class names, skipped file names."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], skipped: list[str]):
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.skipped = skipped


def load_cached(path: Path) -> Optional[CachedDecode]:
    """The cached decode at ``path``, or ``None`` if it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return CachedDecode(torch.from_numpy(stored["images"]), torch.from_numpy(stored["labels"]),
                                [str(name) for name in stored["class_names"]],
                                [str(name) for name in stored["skipped"]])
    except Exception as error:  # a damaged cache is only a missed cache
        warnings.warn(f"ignoring unreadable decode cache {path} ({error}); decoding again", stacklevel=2)
        return None


def save_cached(path: Path, decoded: CachedDecode) -> None:
    """Write ``decoded`` to ``path`` atomically; failing to write only costs a warning."""
    try:
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, images=decoded.images.numpy(), labels=decoded.labels.numpy(),
                     class_names=np.array(decoded.class_names, dtype=str),
                     skipped=np.array(decoded.skipped, dtype=str))
    except OSError as error:
        warnings.warn(f"could not write decode cache {path} ({error}); the next load will decode again",
                      stacklevel=2)
