"""Keep the dreamed images a classifier trained on real data is most confident about.

One report proposes filtering synthetic images by a classifier's confidence in the intended label: for
each class, score every image by ``p(label | x)`` under a classifier trained on the real data, and keep
the top fraction. This trades diversity for fidelity (images the model got wrong - a "shirt" that looks
like a coat - are dropped), so whether it helps is itself a question for ``dreamdata augment``.
"""

from __future__ import annotations

import math

import torch

from dreamdata.classify.checkpoint import LoadedClassifier
from dreamdata.classify.train import predict_probabilities
from dreamdata.errors import DataError


def classifier_label_map(classifier: LoadedClassifier, class_names: list[str], channels: int,
                         image_size: int) -> torch.Tensor:
    """For each of ``class_names`` (the dreamed classes), the classifier's output index of that class.

    Errors name what differs when the classifier does not know a class or expects other images.
    """
    missing = [name for name in class_names if name not in classifier.class_names]
    if missing:
        raise DataError(f"--filter-classifier {classifier.path}: knows classes {classifier.class_names}, not "
                        f"{missing} of the dreamed classes")
    if classifier.channels != channels or classifier.image_size != image_size:
        raise DataError(f"--filter-classifier {classifier.path}: trained on {classifier.channels}-channel "
                        f"{classifier.image_size}x{classifier.image_size} images, the model dreams {channels}-channel "
                        f"{image_size}x{image_size} images")
    return torch.tensor([classifier.class_names.index(name) for name in class_names], dtype=torch.long)


def confidence_in_label(classifier: LoadedClassifier, images: torch.Tensor, labels: torch.Tensor,
                        label_map: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``p(label | x)`` (float32 ``[N]``) for uint8 ``images [N, C, H, W]`` with dreamed ``labels [N]``."""
    probabilities = predict_probabilities(classifier.network, images, batch_size=batch_size)
    return probabilities.gather(1, label_map[labels].unsqueeze(1)).squeeze(1)


def keep_top_per_class(scores: torch.Tensor, labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """Sorted indices of the ``ceil(fraction * n_c)`` best-scored images of each class (ties: lower index).

    ``ceil`` so that every class keeps at least one image when it has any.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    kept = []
    for label in torch.unique(labels).tolist():
        members = (labels == label).nonzero().squeeze(1)
        count = math.ceil(fraction * members.numel() - 1e-9)
        # stable sort of -score keeps the lower index first among equal scores
        order = torch.sort(-scores[members].double(), stable=True).indices
        kept.append(members[order[:count]])
    return torch.sort(torch.cat(kept)).values if kept else torch.zeros(0, dtype=torch.long)
