"""The training set of each arm of a study, built from the real and the synthetic images.

An arm is named by its sources joined with ``+``: ``real``, ``synthetic``, ``real+synthetic``. The
synthetic-only arm is the Classification Accuracy Score (Ravuri & Vinyals 2019): a classifier trained on
generated images only, tested on real ones. ``synthetic_ratio`` fixes how many synthetic images per class
an arm uses, as a multiple of that class's real count (e.g. 1.0 = as many synthetic as real images;
``None`` = all of them), taking the first ones in dreaming order so a smaller ratio is a subset of a
larger one.
"""

from __future__ import annotations

import math

import torch

from dreamdata.data.image_data import ImageData
from dreamdata.errors import ConfigError, DataError

SOURCES = ("real", "synthetic")
STAGE_SEPARATOR = ">"


def arm_stages(arm: str) -> list[str]:
    """The training sets an arm trains on, in order: ``synthetic>real`` -> ``["synthetic", "real"]``."""
    return arm.split(STAGE_SEPARATOR)


def uses_synthetic(arm: str) -> bool:
    """Whether any stage of ``arm`` trains on the synthetic images."""
    return any("synthetic" in stage.split("+") for stage in arm_stages(arm))


def arm_file_stem(arm: str) -> str:
    """The arm's name as a file-name part: ``real+synthetic`` -> ``real_synthetic``,
    ``synthetic>real`` -> ``synthetic-then-real``."""
    return arm.replace("+", "_").replace(STAGE_SEPARATOR, "-then-")


def parse_arms(text: str | list[str]) -> list[str]:
    """``"real,real+synthetic,synthetic"`` (or a list) -> arm names, each checked."""
    arms = [arm.strip() for arm in (text.split(",") if isinstance(text, str) else text) if arm.strip()]
    if not arms:
        raise ConfigError("arms: give at least one arm, e.g. real,real+synthetic,synthetic")
    for arm in arms:
        for stage in arm_stages(arm):
            parts = stage.split("+")
            if any(part not in SOURCES for part in parts) or len(set(parts)) != len(parts):
                raise ConfigError(f"arm {arm!r}: expected sources from {', '.join(SOURCES)} joined by '+' "
                                  f"(e.g. real+synthetic), or such sets trained in turn joined by "
                                  f"'{STAGE_SEPARATOR}' (e.g. synthetic{STAGE_SEPARATOR}real)")
    if len(set(arms)) != len(arms):
        raise ConfigError(f"arms: {arms} lists an arm twice")
    return arms


def synthetic_subset(synthetic: ImageData, real: ImageData, ratio: float | None) -> ImageData:
    """The first ``round(ratio * real count)`` synthetic images of each class (all of them if ``ratio`` is None)."""
    if ratio is None:
        return synthetic
    if ratio <= 0:
        raise ConfigError(f"synthetic_ratio: expected a positive number, got {ratio}")
    real_counts = real.class_counts()
    synthetic_counts = synthetic.class_counts()
    kept = []
    for label in range(real.num_classes):
        wanted = math.floor(ratio * int(real_counts[label]) + 0.5)
        members = (synthetic.labels == label).nonzero().squeeze(1)
        if members.numel() < wanted:
            raise DataError(f"synthetic_ratio {ratio:g}: class {real.class_names[label]!r} needs {wanted} synthetic "
                            f"images ({ratio:g} x {int(real_counts[label])} real), the synthetic set has "
                            f"{int(synthetic_counts[label])}")
        kept.append(members[:wanted])
    return synthetic.subset(torch.sort(torch.cat(kept)).values)


def arm_training_set(stage: str, real: ImageData, synthetic: ImageData | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels one stage of an arm trains on (real first, then synthetic)."""
    images, labels = [], []
    for source in stage.split("+"):
        data = real if source == "real" else synthetic
        if data is None:
            raise ConfigError(f"arm stage {stage!r} needs a synthetic dataset (--synthetic)")
        images.append(data.images)
        labels.append(data.labels)
    return torch.cat(images), torch.cat(labels)
