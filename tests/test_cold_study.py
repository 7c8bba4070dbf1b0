"""`dreamdata cold-study` end to end on the tiny npz fixture: two arms, seconds of training, every output."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from dreamdata.cli import main
from dreamdata.cold_study import TRAINED_MARKER, load_study, run_cold_study
from dreamdata.errors import ConfigError


@pytest.fixture
def study_file(tiny_npz, tmp_path):
    study = {
        "name": "tiny-cold-study",
        "base": {
            "data": {"dataset": f"npz:{tiny_npz}", "val_fraction": 0.1},
            "model": {"network": "unet", "class_conditional": False, "base_channels": 8, "channel_mults": [1, 2],
                      "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0},
            "train": {"batch_size": 8, "steps": 3, "warmup_steps": 1, "log_every": 3, "val_every": 3,
                      "val_batches": 1, "checkpoint_every": 0, "sample_grid": False, "progress": False,
                      "device": "cpu"},
        },
        "arms": {
            "noise-constant": {"process": {"kind": "gaussian", "schedule": "constant", "constant_beta": 0.1,
                                           "num_steps": 20}},
            "blur": {"process": {"kind": "blur", "num_steps": 6, "kernel_size": 5, "blur_beta": 1.0}},
        },
        "evaluation": {"test_images": 5, "samples": 6, "grid": 4, "gaussian_steps": 4, "batch": 4},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.slow
def test_study_trains_scores_and_tabulates(study_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["cold-study", str(study_file), "--out", str(out), "--no-fid"]) == 0
    table = (out / "table.md").read_text()
    assert "FID" not in table  # no scorer given: no column
    assert table.count("\n") == 4 and "| noise-constant | gaussian (constant) | 20 |" in table
    assert "| blur | blur (constant) | 6 |" in table and "(x0-l1)" in table and "(epsilon-mse)" in table
    results = json.loads((out / "results.json").read_text())["arms"]
    for arm, steps in (("noise-constant", 4), ("blur", 6)):
        r = results[arm]
        assert r["train_steps"] == 3 and r["test_images"] == 5 and r["sampling_steps"] == steps
        assert r["held_out_loss"] > 0
        for name in ("rmse", "ssim", "psnr"):  # the baseline: the degraded input scored like the restoration
            assert name in r and f"degraded_{name}" in r
        with Image.open(out / arm / "reconstructions.png") as image:
            assert image.size == (5 * 10 + 2, 3 * 10 + 2)  # 5 test images; original / degraded / restored
        assert (out / arm / "samples.png").is_file() and (out / arm / "samples.npz").is_file()
        assert (out / "runs" / arm / TRAINED_MARKER).is_file()
    assert results["blur"]["sampler"] == "cold-improved" and results["blur"]["start_noise"] == 0.02
    assert results["noise-constant"]["sampler"] == "ddim"
    assert (out / "runs" / "blur" / "blur_prior.json").is_file()
    assert (out / "alpha_bar.png").is_file()

    # a second pass skips training and, with a scorer wired, adds the FID column
    study = load_study(study_file, ["evaluation.samples=2"])
    seen = []

    def stand_in_scorer(images):  # records what a real FID scorer would get
        seen.append((images.dtype, tuple(images.shape)))
        return 1.5

    run_cold_study(study, out, fid_of=stand_in_scorer, only=["blur"])
    import torch

    assert seen == [(torch.uint8, (2, 1, 8, 8))]
    table = (out / "table.md").read_text()
    assert "FID ↓" in table and "| 1.5 |" in table and "| n/a |" in table  # the noise arm was not re-scored
    assert json.loads((out / "results.json").read_text())["arms"]["blur"]["train_steps"] == 3


@pytest.mark.slow
def test_trained_blur_arm_restores_better_than_its_degraded_input(study_file, tmp_path):
    """150 steps (seconds) teach the 8x8 blur arm to undo its blur: the restored test images are much
    closer to the originals than the fully blurred inputs are, by RMSE, PSNR and SSIM alike."""
    out = tmp_path / "out"
    assert main(["cold-study", str(study_file), "--out", str(out), "--no-fid", "--arm", "blur",
                 "train.steps=150"]) == 0
    r = json.loads((out / "results.json").read_text())["arms"]["blur"]
    assert r["train_steps"] == 150
    assert r["rmse"] < 0.5 * r["degraded_rmse"]
    assert r["psnr"] > r["degraded_psnr"] + 6  # dB
    assert r["ssim"] > r["degraded_ssim"] + 0.5


def test_study_cli_scores_fid_with_the_evaluation_protocol(study_file, tmp_path, tiny_extractor_file, monkeypatch):
    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["cold-study", str(study_file), "--out", str(out), "--arm", "blur", "--fid-weights",
                 str(tiny_extractor_file), "--fid-ref-n", "1000"]) == 0  # 1000: the whole test split
    fid = json.loads((out / "results.json").read_text())["arms"]["blur"]["fid"]
    assert "FID" in (out / "table.md").read_text()
    # recomputed independently: the written samples and the test split through the extractor by hand, the
    # Frechet distance by scipy
    import numpy as np
    import torch
    from conftest import TinyFeatures

    from dreamdata.data import load_dataset
    from dreamdata.evaluation.extractor import inception_input

    scipy_linalg = pytest.importorskip("scipy.linalg")
    samples = torch.from_numpy(np.load(out / "blur" / "samples.npz")["images"]).permute(0, 3, 1, 2)
    study = load_study(study_file)
    reference = load_dataset(study.arms["blur"].data, "test").images
    features = [TinyFeatures()(inception_input(images)).double().numpy() for images in (reference, samples)]
    (mean_r, cov_r), (mean_s, cov_s) = [(f.mean(0), np.cov(f, rowvar=False)) for f in features]
    frechet = ((mean_r - mean_s) ** 2).sum() + np.trace(cov_r + cov_s - 2 * scipy_linalg.sqrtm(cov_r @ cov_s).real)
    assert fid == pytest.approx(frechet, rel=1e-3)


def test_study_errors_name_what_is_wrong(study_file, tmp_path):
    with pytest.raises(ConfigError, match="'nope'"):
        run_cold_study(load_study(study_file), tmp_path / "out", only=["nope"])
    with pytest.raises(ConfigError, match="study arm 'blur': config key process.blur_loss"):
        load_study(study_file, ["process.blur_loss=huber"])  # overrides go to base; an arm's own keys win
    with pytest.raises(ConfigError, match="evaluation.sampels"):
        load_study(study_file, ["evaluation.sampels=3"])
    with pytest.raises(ConfigError, match="no such file"):
        load_study(tmp_path / "missing.yaml")
