"""Shared fixtures: tiny datasets the tests make themselves (no network, no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
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


def randomised_tiny_unet(num_classes: int = 3) -> torch.nn.Module:
    """The tiny preset's class-conditional UNet (1 x 8 x 8, ``num_classes`` classes, null class
    ``num_classes``), untrained, in eval mode, with its zero-initialised layers made random so that its output
    depends on x, t and the label. Built from torch's global seed 0 (which it leaves set), so every call
    returns the same weights."""
    from dreamdata.config import load_config
    from dreamdata.networks import build_network

    torch.manual_seed(0)
    net = build_network(load_config("tiny").model, 1, 8, num_classes)
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.abs().max() == 0:
                parameter.normal_(0.0, 0.1)
    return net.eval()


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


# -- real tiny directories of every kind, made once per session, for the report tests ----------------------


@pytest.fixture(scope="session")
def report_dirs(tmp_path_factory):
    """A finished tiny run, GAN run, study (one K, with its augment and dreamed set) and sweep (one arm, two
    cells), written by the real commands on pattern images (about a minute on one CPU core)."""
    import os

    import yaml

    from dreamdata.config import load_config
    from dreamdata.experiments.runner import run_sweep
    from dreamdata.experiments.study.config import load_study_config
    from dreamdata.experiments.study.pipeline import run_study
    from dreamdata.experiments.sweep_config import load_sweep
    from dreamdata.training.trainer import train

    root = tmp_path_factory.mktemp("report-dirs")
    names = np.array(["hstripes", "vstripes", "square"])
    images, labels = make_pattern_images(per_class=16)
    np.savez(root / "tiny.npz", images=images, labels=labels, class_names=names)
    images28, labels28 = make_pattern_images(per_class=16, size=28)
    np.savez(root / "tiny28.npz", images=images28, labels=labels28, class_names=names)
    extractor = root / "tiny-extractor.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(TinyFeatures()).save(str(extractor))
    previous_cache = os.environ.get("DREAMDATA_CACHE")
    os.environ["DREAMDATA_CACHE"] = str(root / "cache")
    try:
        run = train(load_config("tiny", [f"data.dataset=npz:{root / 'tiny28.npz'}", f"runs_dir={root / 'runs'}",
                                         "data.per_class=null", "data.image_size=null", "train.steps=6",
                                         "train.log_every=2", "train.val_every=2", "train.checkpoint_every=3",
                                         "train.sample_steps=3", "train.sample_per_class=4", "name=tiny"])).run_dir
        gan = train(load_config("gan", [f"data.dataset=npz:{root / 'tiny28.npz'}", f"runs_dir={root / 'runs'}",
                                        "data.val_fraction=0.1", "train.minutes=null", "train.steps=4",
                                        "train.batch_size=8", "model.base_channels=8", "model.latent_dim=16",
                                        "train.log_every=2", "train.val_every=2", "train.checkpoint_every=2",
                                        "train.sample_per_class=4", "train.device=cpu", "train.progress=false",
                                        "name=gan"])).run_dir
        study_file = root / "study.yaml"
        study_file.write_text(f"""
name: tiny-study
runs_dir: {root / 'studies'}
device: cpu
real: {{dataset: "npz:{root / 'tiny.npz'}", per_class: [4]}}
generator:
  config: tiny
  overrides: [train.checkpoint_every=0, data.image_size=null, train.sample_steps=3]
  steps: [4]
dream: {{per_class: [3], steps: 3, batch: 9, chunk: 5}}
augment: {{seeds: 2, classifier: {{batch_size: 8}}}}
classifier_steps: [4]
""")
        run_study(load_study_config(str(study_file)), log=lambda message: None)
        base = root / "base.yaml"
        base.write_text(yaml.safe_dump({
            "data": {"dataset": f"npz:{root / 'tiny.npz'}", "val_fraction": 0.1, "hflip": False},
            "process": {"schedule": "cosine", "num_steps": 20},
            "model": {"network": "unet", "class_conditional": True, "base_channels": 8, "channel_mults": [1, 2],
                      "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0},
            "train": {"batch_size": 8, "steps": 2, "warmup_steps": 1, "log_every": 1, "val_every": 1,
                      "val_batches": 1, "checkpoint_every": 2, "sample_grid": False, "progress": False,
                      "device": "cpu"}}))
        sweep_file = root / "sweep.yaml"
        sweep_file.write_text(yaml.safe_dump({
            "name": "tiny-sweep", "base": str(base), "sampling": {"sampler": "ddim", "steps": 2},
            "sampling_axes": {"guidance": [0.0, 1.0]}, "checkpoints": ["last"], "metrics": ["fid", "held_out_loss"],
            "evaluation": {"n": 6, "ref_n": 12, "batch": 6, "fid_weights": str(extractor), "mosaic_per_class": 2}}))
        run_sweep(load_sweep(str(sweep_file)), root / "sweep", log=lambda message: None)
    finally:
        if previous_cache is None:
            os.environ.pop("DREAMDATA_CACHE", None)
        else:
            os.environ["DREAMDATA_CACHE"] = previous_cache
    study = root / "studies" / "tiny-study"
    return {"run": run, "gan": gan, "study": study, "augment": study / "K4" / "augment",
            "dream": study / "K4" / "synthetic", "sweep": root / "sweep"}


def torchrun_train(args: list[str]) -> None:
    """``dreamdata train ARGS`` under torchrun with 2 CPU processes (gloo); fails the test with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "dreamdata", "train", *args]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
