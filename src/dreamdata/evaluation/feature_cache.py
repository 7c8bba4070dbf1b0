"""Features of an image set, computed once: cached on disk under a hash of the pixels and the extractor.

Inception-v3 runs at a few images per second on a laptop CPU, so a 10k reference set costs half an hour;
its features are kept in ``<cache>/features/<sha256>.pt`` where the hash covers the extractor's ``name`` and
the exact uint8 pixels (shape included). Any change of data, padding, resize, subset or network gives a
new key — there is no way to read stale statistics. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from dreamdata.atomic import atomic_path
from dreamdata.evaluation.extractor import FeatureExtractor, ImageFeatures, check_uint8_images

__all__ = ["default_cache_dir", "extract_features", "features_key"]

CACHE_ENV = "DREAMDATA_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "~/.cache/dreamdata")).expanduser()


def features_key(images: torch.Tensor, extractor_name: str) -> str:
    """sha256 over the extractor's name, the shape and the raw bytes of uint8 ``images``."""
    digest = hashlib.sha256()
    digest.update(extractor_name.encode())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _check_finite(features: ImageFeatures, where: str) -> None:
    for name, values in (("pool features", features.pool), ("logits", features.logits)):
        if values is not None and not torch.isfinite(values).all():
            bad = int((~torch.isfinite(values)).any(dim=1).sum())
            raise FloatingPointError(f"{where}: the extractor returned NaN/inf {name} for {bad} image(s); "
                                     "refusing to compute metrics from them")


def extract_features(images: torch.Tensor, extractor: FeatureExtractor, batch_size: int = 100,
                     cache_dir: Optional[Path] = None, use_cache: bool = True, progress: bool = True,
                     description: str = "features") -> ImageFeatures:
    """Features of uint8 ``images`` ``[N, C, H, W]``, from the cache when this exact set was seen before."""
    check_uint8_images(images)
    images = images.cpu()
    path = None
    if use_cache:
        path = (cache_dir or default_cache_dir()) / "features" / f"{features_key(images, extractor.name)}.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            return ImageFeatures(stored["pool"], stored.get("logits"))
    pools, logits = [], []
    started = time.perf_counter()
    with tqdm(total=len(images), desc=description, unit="img", disable=not progress, leave=False) as bar:
        for begin in range(0, len(images), batch_size):
            batch = extractor(images[begin:begin + batch_size])
            pools.append(batch.pool)
            if batch.logits is not None:
                logits.append(batch.logits)
            bar.update(len(batch))
    features = ImageFeatures(torch.cat(pools) if pools else torch.empty(0, 0),
                             torch.cat(logits) if logits else None, seconds=time.perf_counter() - started)
    _check_finite(features, description)
    if path is not None:
        with atomic_path(path) as temporary:
            torch.save({"pool": features.pool, "logits": features.logits, "extractor": extractor.name,
                        "count": len(images)}, temporary)
    return features
