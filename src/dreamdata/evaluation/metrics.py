"""Sample-quality metrics computed from features extracted once (see :mod:`.extractor`).

FID, KID and the Inception Score are torchmetrics' own implementations; torchmetrics normally runs its
network inside ``update``, so it is handed :class:`PrecomputedFeatures` — an identity "network" — and the
feature rows we extracted (and cached) once, so one Inception pass serves every metric and every class.
Their random subsets/splits draw from torch's global RNG; each call here forks the RNG and seeds it, so a
metric is reproducible and never perturbs a training run's random stream.

* **FID** (Heusel et al. 2017, eq. 6): ``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})`` between the
  Gaussians fitted to the two feature sets.
* **KID** (Binkowski et al. 2018): unbiased MMD² with the cubic kernel ``k(x, y) = (x·y / d + 1)^3``, mean
  and std over ``subsets`` random subsets of ``subset_size`` from each set.
* **Inception Score** (Salimans et al. 2016): ``exp E_x KL(p(y|x) || p(y))``, mean ± std over splits.
* **Improved precision / recall** (Kynkäänniemi et al. 2019): a generated sample counts towards precision
  when it falls inside the k-NN ball (k = 3) of some real sample; recall swaps the roles.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

__all__ = ["PrecomputedFeatures", "fid", "inception_score", "kid", "precision_recall"]


class PrecomputedFeatures(torch.nn.Module):
    """An identity module that lets torchmetrics' metrics consume feature rows we extracted ourselves."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_pair(real: torch.Tensor, fake: torch.Tensor, minimum: int, metric: str) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"{metric}: feature sets must be [N, D] with the same D, got {list(real.shape)} and "
                         f"{list(fake.shape)}")
    for name, values in (("reference", real), ("samples", fake)):
        if len(values) < minimum:
            raise ValueError(f"{metric} needs at least {minimum} {name} images, got {len(values)}")
        if not torch.isfinite(values).all():
            raise FloatingPointError(f"{metric}: the {name} features contain NaN/inf")


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet Inception Distance between feature sets ``[N_r, D]`` and ``[N_g, D]`` (float64 maths).

    With fewer samples than feature dimensions the covariance is singular and FID is biased upwards
    (strongly: compare figures only at equal N); :func:`dreamdata.evaluation.suite` warns about it.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_pair(real, fake, 2, "FID")
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), reset_real_features=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    value = float(metric.compute())
    if math.isnan(value):
        raise FloatingPointError("FID came out NaN (degenerate covariance?)")
    return max(value, 0.0)  # tiny negative values are round-off of an exact 0


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance ``(mean, std)``; ``subset_size`` is capped at the smaller set's size."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_pair(real, fake, 2, "KID")
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score ``(mean, std over splits)`` from classifier logits ``[N, K]``."""
    from torchmetrics.image.inception import InceptionScore

    if logits.dim() != 2 or len(logits) < splits:
        raise ValueError(f"Inception Score needs logits [N, K] with N >= splits = {splits}, got "
                         f"{list(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise FloatingPointError("Inception Score: the logits contain NaN/inf")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=PrecomputedFeatures(logits.shape[1]), splits=splits)
    metric.update(logits.double())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest *other* row (the radius of its k-NN ball)."""
    radii = []
    for begin in range(0, len(features), chunk):
        distances = torch.cdist(features[begin:begin + chunk], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # k + 1: the row itself is at distance 0
    return torch.cat(radii)


def _fraction_inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of ``queries`` that lie within ``radii[j]`` of some ``centres[j]``."""
    inside = 0
    for begin in range(0, len(queries), chunk):
        distances = torch.cdist(queries[begin:begin + chunk], centres)
        inside += int((distances <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1024,
                     max_points: Optional[int] = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii, in float64."""
    _check_pair(real, fake, k + 1, "precision/recall")
    real, fake = real.double(), fake.double()
    if max_points is not None:
        real, fake = real[:max_points], fake[:max_points]
    precision = _fraction_inside(fake, real, _kth_neighbour_radii(real, k, chunk), chunk)
    recall = _fraction_inside(real, fake, _kth_neighbour_radii(fake, k, chunk), chunk)
    return precision, recall
