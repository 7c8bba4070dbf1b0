"""``fid_of(images) -> float``: FID of image sets against one fixed reference, its features computed once."""

from __future__ import annotations

from typing import Callable

import torch

from dreamdata.config import DataConfig
from dreamdata.evaluation import metrics
from dreamdata.evaluation.extractor import FeatureExtractor
from dreamdata.evaluation.feature_cache import extract_features
from dreamdata.evaluation.sources import load_reference, reference_config
from dreamdata.evaluation.suite import ImageSet, check_comparable

__all__ = ["reference_fid_scorer"]


def reference_fid_scorer(data: DataConfig, extractor: FeatureExtractor, split: str = "test", count: int = 2000,
                         progress: bool = True) -> Callable[[torch.Tensor], float]:
    """A scorer comparing uint8 ``[N, C, H, W]`` images with ``count`` images of ``split`` prepared as ``data``
    says (no per-class cap). Mismatched shapes raise, as in ``dreamdata evaluate``."""
    reference = load_reference(reference_config(data), split, count)
    reference_features = extract_features(reference.images, extractor, progress=progress,
                                          description=f"reference features ({len(reference)} images)")

    def fid_of(images: torch.Tensor) -> float:
        check_comparable(ImageSet(images, None, [], f"{len(images)} samples"), reference)
        features = extract_features(images, extractor, progress=progress, description="sample features")
        return metrics.fid(reference_features.pool.double(), features.pool.double())

    fid_of.reference = reference.source  # type: ignore[attr-defined]
    return fid_of
