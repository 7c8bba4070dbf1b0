"""Compare a set of generated images with a reference set: every metric from one feature pass.

:func:`evaluate_images` is what ``dreamdata evaluate`` and the in-training evaluation call. It checks that
the two sets are comparable (same channels and size — FID between 28-px samples and 32-px references would
measure the padding), extracts features once per set (cached, see :mod:`.feature_cache`), and computes
FID, KID, the Inception Score (when the extractor has logits), improved precision/recall and, for labelled
samples, FID per class against the reference images of that class.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from dreamdata.errors import DataError
from dreamdata.evaluation import metrics
from dreamdata.evaluation.extractor import FeatureExtractor, ImageFeatures
from dreamdata.evaluation.feature_cache import extract_features

__all__ = ["FID_STABLE_N", "EvaluationOptions", "ImageSet", "check_comparable", "evaluate_images",
           "subsample"]

FID_STABLE_N = 2048  # below this many images the 2048-d covariance is singular


class SmallSampleWarning(UserWarning):
    """A metric is computed from fewer images than it needs to be stable (figures not comparable)."""


@dataclass
class ImageSet:
    """uint8 images ``[N, C, H, W]``, labels ``[N]`` (-1 = unlabelled) and class names, plus a description."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    class_names: list[str]
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class EvaluationOptions:
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_splits: int = 10
    pr_k: int = 3  # Kynkäänniemi et al.'s k
    per_class: bool = True
    seed: int = 0  # for the random subsets/splits of KID and IS
    batch_size: int = 100
    progress: bool = True
    cache_dir: Optional[Path] = None
    use_cache: bool = True
    metrics: Sequence[str] = field(default_factory=lambda: ("fid", "kid", "is", "pr"))


def subsample(images: torch.Tensor, labels: Optional[torch.Tensor], count: Optional[int], seed: int = 0
              ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The first ``count`` images of a seeded permutation (all of them, in order, when ``count`` covers
    the set), so a reference subset is fixed for a given N and seed."""
    if count is None or count >= len(images):
        return images, labels
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[order], None if labels is None else labels[order]


def check_comparable(samples: ImageSet, reference: ImageSet) -> None:
    """Refuse sets whose images differ in channels or size (the comparison would measure the difference)."""
    for image_set in (samples, reference):
        if len(image_set) == 0:
            raise DataError(f"{image_set.source}: no images to evaluate")
    if samples.images.shape[1:] != reference.images.shape[1:]:
        s, r = samples.images.shape[1:], reference.images.shape[1:]
        raise DataError(f"samples ({samples.source}) are {s[0]}x{s[1]}x{s[2]} (CxHxW) but the reference "
                        f"({reference.source}) is {r[0]}x{r[1]}x{r[2]}; evaluate against data prepared the "
                        "same way (e.g. the run's data.pad_to / image_size / channels)")


def check_reference_classes(class_names: Sequence[str], reference: ImageSet) -> None:
    """Per-class FID compares each sample class with the reference images of the same name: refuse sample
    classes the reference lacks (before any sampling or feature extraction)."""
    if reference.labels is None:
        return
    lacking = [name for name in class_names if name not in reference.class_names]
    if lacking:
        raise DataError(f"samples have class(es) {', '.join(map(repr, lacking))}, which the reference "
                        f"({reference.source}) lacks (it has {', '.join(reference.class_names)}); give the "
                        "run's own dataset as --ref, or --no-per-class")


def _warn_small(count: int, what: str) -> None:
    if count < FID_STABLE_N:
        warnings.warn(f"{what}: N = {count} < {FID_STABLE_N} images, so the 2048-d covariance is singular and "
                      "FID/KID are biased upwards; compare figures only at equal N (10k is the convention)",
                      SmallSampleWarning, stacklevel=3)


def _per_class_fid(samples: ImageSet, sample_features: ImageFeatures, reference: ImageSet,
                   reference_features: ImageFeatures) -> dict[str, float]:
    if samples.labels is None or (samples.labels < 0).all() or reference.labels is None:
        return {}
    results = {}
    reference_index = {name: i for i, name in enumerate(reference.class_names)}
    present = [label for label in samples.labels.unique().tolist() if label >= 0]
    check_reference_classes([samples.class_names[label] for label in present], reference)
    for label in present:
        name = samples.class_names[label]
        fake = sample_features.pool[samples.labels == label]
        real = reference_features.pool[reference.labels == reference_index[name]]
        if len(fake) < 2 or len(real) < 2:
            warnings.warn(f"per-class FID of {name!r} skipped: {len(fake)} samples, {len(real)} reference "
                          "images (need at least 2 each)", SmallSampleWarning, stacklevel=2)
            continue
        results[name] = metrics.fid(real.double(), fake.double())
    return results


def evaluate_images(samples: ImageSet, reference: ImageSet, extractor: FeatureExtractor,
                    options: Optional[EvaluationOptions] = None) -> dict:
    """All requested metrics of ``samples`` against ``reference``, as a JSON-ready dict."""
    options = options or EvaluationOptions()
    check_comparable(samples, reference)
    if options.per_class and "fid" in options.metrics and samples.labels is not None:
        check_reference_classes([samples.class_names[label] for label in samples.labels.unique().tolist()
                                 if label >= 0], reference)  # before the features, not after
    _warn_small(len(samples), f"samples ({samples.source})")
    started = time.perf_counter()
    kwargs = dict(batch_size=options.batch_size, cache_dir=options.cache_dir, use_cache=options.use_cache,
                  progress=options.progress)
    reference_features = extract_features(reference.images, extractor, description="reference features", **kwargs)
    sample_features = extract_features(samples.images, extractor, description="sample features", **kwargs)
    real, fake = reference_features.pool.double(), sample_features.pool.double()
    result: dict = {
        "n_samples": len(samples), "n_reference": len(reference), "samples": samples.source,
        "reference": reference.source, "extractor": extractor.name,
        "image_shape": list(samples.images.shape[1:]),
    }
    wanted = set(options.metrics)
    unknown = wanted - {"fid", "kid", "is", "pr"}
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}: expected fid, kid, is, pr")
    if "fid" in wanted:
        result["fid"] = metrics.fid(real, fake)
        if options.per_class:
            per_class = _per_class_fid(samples, sample_features, reference, reference_features)
            if per_class:
                result["fid_per_class"] = per_class
    if "kid" in wanted:
        result["kid_mean"], result["kid_std"] = metrics.kid(real, fake, options.kid_subsets,
                                                            options.kid_subset_size, options.seed)
        result["kid_subset_size"] = min(options.kid_subset_size, len(real), len(fake))
    if "is" in wanted:
        if sample_features.logits is None:
            result["inception_score"] = None
            result["inception_score_note"] = (f"extractor {extractor.name} gives pool features only (no "
                                              "classifier head); the Inception Score needs torch-fidelity's "
                                              "Inception (pip install torch-fidelity, downloads once)")
        else:
            result["is_mean"], result["is_std"] = metrics.inception_score(sample_features.logits,
                                                                          options.is_splits, options.seed)
    if "pr" in wanted:
        result["precision"], result["recall"] = metrics.precision_recall(real, fake, k=options.pr_k)
    result["seconds"] = {"reference_features": reference_features.seconds,
                         "sample_features": sample_features.seconds,
                         "total": time.perf_counter() - started}
    return result
