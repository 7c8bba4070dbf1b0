"""Metric maths against closed forms: FID, KID, Inception Score, improved precision/recall, SSIM/PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from dreamdata.evaluation import metrics


def exact_moments(count: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    """``count`` points whose sample mean and (unbiased) sample covariance are exactly ``mean`` and ``cov``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, len(mean)))
    x -= x.mean(0)
    whiten = np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False)))
    x = x @ whiten.T @ np.linalg.cholesky(cov).T + mean
    return torch.from_numpy(x)


def closed_form_fid(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) (Heusel et al. 2017, eq. 6), via scipy's sqrtm."""
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_of_a_set_against_itself_is_zero():
    x = exact_moments(500, np.zeros(8), np.eye(8), seed=0)
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_between_gaussians_matches_the_closed_form():
    d = 6
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = a @ a.T + 0.5 * np.eye(d), b @ b.T + 0.5 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) + 1.0
    x, y = exact_moments(400, mu1, s1, seed=2), exact_moments(300, mu2, s2, seed=3)
    assert metrics.fid(x, y) == pytest.approx(closed_form_fid(mu1, s1, mu2, s2), rel=1e-6)


def test_fid_of_shifted_diagonal_gaussians_is_the_hand_computed_value():
    # N(0, I) vs N(m, 4I) in d=4: ||m||^2 + sum (1 + 4 - 2 * 2) = ||m||^2 + d
    mu = np.array([1.0, 2.0, 0.0, -1.0])
    x = exact_moments(300, np.zeros(4), np.eye(4), seed=4)
    y = exact_moments(300, mu, 4 * np.eye(4), seed=5)
    assert metrics.fid(x, y) == pytest.approx(6.0 + 4.0, rel=1e-6)


def test_kid_is_unbiased_on_identical_distributions_and_positive_otherwise():
    rng = np.random.default_rng(6)
    same = [metrics.kid(torch.from_numpy(rng.standard_normal((400, 16))),
                        torch.from_numpy(rng.standard_normal((400, 16))), subsets=20, subset_size=200, seed=s)[0]
            for s in range(5)]
    # the biased (V-statistic) MMD would sit near 2 E k(x, x) / m > 0; the unbiased one centres on 0
    assert abs(np.mean(same)) < 0.01
    assert min(same) < 0 < max(same) or abs(np.mean(same)) < 0.003
    shifted = metrics.kid(torch.from_numpy(rng.standard_normal((400, 16))),
                          torch.from_numpy(rng.standard_normal((400, 16)) + 1.0), subsets=20, subset_size=200)
    assert shifted[0] > 0.5


def test_kid_with_a_seed_is_reproducible_and_leaves_the_global_rng_alone():
    x, y = torch.randn(300, 8, generator=torch.Generator().manual_seed(0)), torch.randn(300, 8) + 0.2
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = metrics.kid(x, y, subsets=10, subset_size=100, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    assert metrics.kid(x, y, subsets=10, subset_size=100, seed=7) == first


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = metrics.inception_score(torch.zeros(100, 10), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    classes = 7
    logits = 60.0 * torch.nn.functional.one_hot(torch.arange(700) % classes, classes).float()
    mean, std = metrics.inception_score(logits, splits=1)  # one split: exactly balanced
    assert mean == pytest.approx(classes, rel=1e-6)
    mean, _ = metrics.inception_score(logits, splits=10)  # random splits of 70 are only nearly balanced
    assert classes - 0.5 < mean <= classes + 1e-6


def test_inception_score_of_one_confident_class_is_one():
    logits = 60.0 * torch.nn.functional.one_hot(torch.zeros(100, dtype=torch.long), 5).float()
    assert metrics.inception_score(logits, splits=5)[0] == pytest.approx(1.0, abs=1e-6)


def test_precision_recall_on_point_clouds():
    rng = np.random.default_rng(8)
    real = torch.from_numpy(rng.standard_normal((600, 2)))
    same = torch.from_numpy(rng.standard_normal((600, 2)))
    precision, recall = metrics.precision_recall(real, same, k=3)
    assert precision > 0.9 and recall > 0.9
    far = same + 50.0
    assert metrics.precision_recall(real, far, k=3) == (0.0, 0.0)
    # mode collapse: samples all near the origin are realistic (high precision) but cover little (low recall)
    collapsed = torch.from_numpy(rng.standard_normal((600, 2)) * 0.1)
    precision, recall = metrics.precision_recall(real, collapsed, k=3)
    assert precision > 0.95 and recall < 0.3


def test_precision_recall_matches_a_brute_force_definition():
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) * 1.5

    def radii(points):
        d = np.linalg.norm(points[:, None] - points[None], axis=-1)
        return np.sort(d, axis=1)[:, 3]  # index 0 is the point itself; k = 3

    def inside(queries, centres):
        d = np.linalg.norm(queries[:, None] - centres[None], axis=-1)
        return float((d <= radii(centres)[None]).any(axis=1).mean())

    got = metrics.precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=3, chunk=7)
    assert got == pytest.approx((inside(fake, real), inside(real, fake)))


def test_metrics_refuse_nan_and_too_few_features():
    good = torch.randn(10, 4)
    bad = good.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        metrics.fid(good, bad)
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.fid(good, good[:1])
    with pytest.raises(ValueError, match="same D"):
        metrics.kid(good, torch.randn(10, 5))


def test_ssim_and_psnr_on_known_pairs():
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    image = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(structural_similarity_index_measure(image, image, data_range=1.0)) == pytest.approx(1.0)
    # a uniform error of 0.1 on [0, 1] data: MSE 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB
    shifted = (image * 0.5 + 0.1)
    psnr = peak_signal_noise_ratio(shifted + 0.1, shifted, data_range=1.0)
    assert float(psnr) == pytest.approx(20.0, abs=1e-4)
    assert float(structural_similarity_index_measure(1 - image, image, data_range=1.0)) < 0.0
    assert math.isfinite(float(psnr))
