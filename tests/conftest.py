"""Shared fixtures: tiny datasets the tests make themselves (no network, no downloads)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch


def make_pattern_images(per_class: int, size: int = 8, classes: int = 3,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three easily told apart classes: horizontal stripes, vertical stripes, a bright square; plus noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    grid_y, grid_x = np.mgrid[0:size, 0:size]
    patterns = [(grid_y % 2) * 255, (grid_x % 2) * 255,
                ((abs(grid_y - size / 2) < size / 4) & (abs(grid_x - size / 2) < size / 4)) * 255]
    for label in range(classes):
        for _ in range(per_class):
            noisy = patterns[label % len(patterns)] * 0.8 + rng.uniform(0, 50, (size, size))
            images.append(noisy.clip(0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images)[..., None], np.array(labels)


@pytest.fixture
def tiny_npz(tmp_path):
    """An npz dataset: 3 classes x 16 grayscale 8x8 images."""
    images, labels = make_pattern_images(per_class=16)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["hstripes", "vstripes", "square"]))
    return path


@pytest.fixture
def tiny_overrides(tiny_npz, tmp_path):
    """Overrides that turn the `tiny` preset into a seconds-long run on the npz fixture."""
    return [f"data.dataset=npz:{tiny_npz}", f"runs_dir={tmp_path / 'runs'}", "data.per_class=null"]


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine a second
    spinning thread makes every small op wait; one thread keeps the suite fast and its timing stable."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class TinyFeatures(torch.nn.Module):
    """A stand-in for Inception: 3x299x299 in [-1, 1] -> 24 features (2x2 average pools and their squares)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return torch.cat([pooled, pooled.pow(2)], dim=1)


@pytest.fixture
def tiny_extractor_file(tmp_path):
    """A TorchScript feature network file, used where the FID weights file would be."""
    path = tmp_path / "tiny-extractor.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, TorchScript files are not
        torch.jit.script(TinyFeatures()).save(str(path))
    return path
