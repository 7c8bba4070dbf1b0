"""Autoguidance (Karras et al. 2024, :mod:`dreamdata.sampling.autoguidance`): the guided output against the
closed form of Gaussian data in every parameterisation, a guide equal to the model against unguided sampling,
and the command's contract (the guide's checkpoint, its fit, the records, the sweep's cells)."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.schedules import cosine_betas
from dreamdata.sampling.autoguidance import AutoguidedNetwork
from test_sampling import S, T, GaussianOracle


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v", "edm"])
def test_autoguided_eps_is_the_papers_combination_in_every_parameterisation(prediction):
    # Data x0 ~ N(mu, s^2): the exact eps at x_t is sqrt(1 - ab)(x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab). A guide that
    # believes the data have the spread s0 instead predicts the same formula with s0. Whatever the networks output
    # (eps, x0, v, EDM's F), the guided eps must be (1 + w) eps_model - w eps_guide (Karras et al. 2024, eq. 2).
    process = GaussianDiffusion(cosine_betas(T), prediction=prediction)
    mu = torch.full((1, 1, 1, 2, 2), 0.3)
    s, s0, w = S, S * 1.7, 1.5
    guided = AutoguidedNetwork(GaussianOracle(process, mu, s, prediction),
                               GaussianOracle(process, mu, s0, prediction), w)
    x = torch.randn((6, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.3
    for tau in (T - 1, T // 2, 3):
        t = torch.full((6,), tau)
        _, eps = process.predict_x0_and_eps(guided(process.network_input(x, t), t, None), x, t)
        ab = float(process.schedule.alpha_bar[tau])
        residual = x - ab ** 0.5 * mu[0]
        eps_model = (1 - ab) ** 0.5 * residual / (ab * s ** 2 + 1 - ab)
        eps_guide = (1 - ab) ** 0.5 * residual / (ab * s0 ** 2 + 1 - ab)
        torch.testing.assert_close(eps, (1 + w) * eps_model - w * eps_guide, rtol=1e-4, atol=1e-5)


def test_the_variance_channels_are_the_models():
    # a learned_range network outputs [prediction | variance]; only the prediction is guided (hand computation)
    model = lambda x, t, y: torch.cat([torch.full_like(x, 2.0), torch.full_like(x, 0.25)], dim=1)  # noqa: E731
    guide = lambda x, t, y: torch.cat([torch.full_like(x, 1.0), torch.full_like(x, 0.75)], dim=1)  # noqa: E731
    out = AutoguidedNetwork(model, guide, 0.5)(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), None)
    assert out.shape == (2, 6, 4, 4)
    assert torch.all(out[:, :3] == 1.5 * 2.0 - 0.5 * 1.0) and torch.all(out[:, 3:] == 0.25)
    with pytest.raises(ValueError, match="weight must be > 0"):
        AutoguidedNetwork(model, guide, 0.0)


@pytest.fixture
def tiny_run(tiny_overrides):
    from dreamdata.config import load_config
    from dreamdata.training.trainer import train

    overrides = [*tiny_overrides, "train.steps=2", "train.sample_grid=false", "train.checkpoint_every=1",
                 "train.keep_checkpoints=0"]
    return train(load_config("tiny", overrides)).run_dir


def _images(folder):
    with np.load(folder / "samples.npz") as data:
        return data["images"].astype(int)


def test_a_guide_equal_to_the_model_samples_what_the_model_samples(tmp_path, tiny_run, capsys):
    # (1 + w) D - w D = D: a guide with the model's own weights (a copy of its checkpoint) changes no image
    from dreamdata.cli import main

    folder = tiny_run / "checkpoints"
    copy = folder / "step-000000099.safetensors"  # not a training step of the run: a copy of the last weights
    shutil.copy(folder / "step-000000002.safetensors", copy)
    common = ["sample", str(tiny_run), "--n", "3", "--sampler", "ddim", "--steps", "5", "--guidance", "1",
              "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--autoguide", str(copy), "--autoguide-weight", "2", "--out", str(tmp_path / "self")]) == 0
    assert np.abs(_images(tmp_path / "plain") - _images(tmp_path / "self")).max() <= 1
    # an earlier, weaker checkpoint does change them; the record says which guide, and counts both networks
    assert main([*common, "--autoguide", "1", "--autoguide-weight", "2", "--out", str(tmp_path / "early")]) == 0
    assert np.abs(_images(tmp_path / "plain") - _images(tmp_path / "early")).max() > 1
    record = json.loads((tmp_path / "early" / "sample.json").read_text())
    assert record["autoguide"]["step"] == 1 and record["autoguide"]["weight"] == 2.0
    assert record["network_evaluations_per_sample"] == 2 * 2 * 5  # guided (2 per step) x autoguided (2 networks)
    assert json.loads((tmp_path / "plain" / "sample.json").read_text())["autoguide"] is None


def test_a_guide_that_cannot_guide_is_a_one_line_error(tmp_path, tiny_run, tiny_overrides, capsys):
    from dreamdata.cli import main
    from dreamdata.config import load_config
    from dreamdata.training.trainer import train

    common = ["sample", str(tiny_run), "--n", "1", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "o")]
    cases = [
        (["--autoguide", "7"], "has no checkpoint at step 7 (it has: 1, 2;"),
        (["--autoguide", "2"], "the model's own checkpoint"),
        (["--autoguide", str(tmp_path / "nowhere")], "no such run directory or checkpoint"),
    ]
    other = train(load_config("tiny", [*tiny_overrides, "train.steps=1", "train.sample_grid=false", "name=other",
                                       "process.num_steps=40"])).run_dir  # the tiny preset's T is 50
    cases.append((["--autoguide", str(other)], "its noise schedule differs"))
    for extra, expected in cases:
        capsys.readouterr()
        assert main([*common, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        main([*common, "--autoguide", "1", "--autoguide-weight", "0"])
    assert stopped.value.code == 2 and "expected a number > 0" in capsys.readouterr().err


def test_a_sweep_cell_is_autoguided_by_the_arms_own_checkpoint(tmp_path, tiny_npz, tiny_extractor_file,
                                                               monkeypatch):
    from dreamdata.cli import main
    from dreamdata.errors import ConfigError
    from dreamdata.experiments.sweep_config import parse_sweep
    from test_sweep import TINY_MODEL, TINY_TRAIN

    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"dataset": f"npz:{tiny_npz}", "val_fraction": 0.1, "hflip": False},
        "process": {"schedule": "linear", "num_steps": 20}, "model": TINY_MODEL, "train": TINY_TRAIN}))
    with pytest.raises(ConfigError, match="autoguide 1.0 needs autoguide_step"):
        parse_sweep({"base": str(base), "sampling": {"autoguide": 1.0}}, "test")
    with pytest.raises(ConfigError, match="autoguide_step 'x'"):
        parse_sweep({"base": str(base), "sampling": {"autoguide": 1.0, "autoguide_step": "x"}}, "test")
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "ag", "base": str(base), "arms": [{"name": "a"}], "metrics": ["fid"],
        "cells": [{"sampler": "ddim", "steps": 3},
                  {"sampler": "ddim", "steps": 3, "autoguide": 1.0, "autoguide_step": 2},
                  {"sampler": "ddim", "steps": 3, "autoguide": 0.0, "autoguide_step": 2}],  # w = 0: the plain cell
        "evaluation": {"n": 6, "ref_n": 12, "batch": 4, "fid_weights": str(tiny_extractor_file)}}))
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    results = {r["cell"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(results) == ["a/step-4/ddim-3steps-w0", "a/step-4/ddim-3steps-w0-ag1at2"]
    plain, guided = results["a/step-4/ddim-3steps-w0"], results["a/step-4/ddim-3steps-w0-ag1at2"]
    assert plain["network_evaluations"] == 6 * 3 and guided["network_evaluations"] == 6 * 3 * 2
    assert guided["metrics"]["fid"] != plain["metrics"]["fid"]
    # a step the arm has no checkpoint at is a one-line error naming the cell
    sweep_file.write_text(sweep_file.read_text().replace("autoguide_step: 2", "autoguide_step: 3"))
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 2


def test_an_autoguided_dream_is_the_same_in_two_workers_and_resumes_only_with_its_guide(tiny_run, tmp_path, capsys):
    # the workers load the guide themselves: their dataset must equal one process's byte for byte
    from test_dream import dream
    from test_dream_workers import same_dataset

    from dreamdata.cli import main

    one, two = tmp_path / "one", tmp_path / "two"
    assert dream(tiny_run, one, "--workers", "1", "--autoguide", "1", "--autoguide-weight", "0.5") == 0
    assert dream(tiny_run, two, "--workers", "2", "--autoguide", "1", "--autoguide-weight", "0.5") == 0
    same_dataset(one, two)
    spec = json.loads((one / "manifest.json").read_text())["spec"]
    assert spec["autoguide_weight"] == 0.5 and spec["autoguide_checkpoint"].endswith("step-000000001.safetensors")
    plain = tmp_path / "plain"
    assert dream(tiny_run, plain, "--workers", "1") == 0
    assert json.loads((plain / "manifest.json").read_text())["spec"]["autoguide_sha256"] is None
    capsys.readouterr()
    # the same output directory with another weight is another dataset: refused, naming the key
    assert main(["dream", str(tiny_run), "--per-class", "5", "--out", str(one), "--steps", "3", "--chunk", "4",
                 "--batch", "3", "--device", "cpu", "--guidance", "1.5", "--workers", "1", "--autoguide", "1",
                 "--autoguide-weight", "1"]) == 2
    assert "autoguide_weight: 0.5 -> 1.0" in capsys.readouterr().err


def test_evaluate_with_a_guide_equal_to_the_model_scores_what_the_model_scores(tmp_path, tiny_run, tiny_extractor_file,
                                                                              monkeypatch, capsys):
    from dreamdata.cli import main

    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DREAMDATA_FID_WEIGHTS", str(tiny_extractor_file))
    copy = tiny_run / "checkpoints" / "step-000000099.safetensors"
    shutil.copy(tiny_run / "checkpoints" / "step-000000002.safetensors", copy)
    common = ["evaluate", str(tiny_run), "--n", "12", "--steps", "3", "--batch", "5", "--metrics", "fid"]
    assert main([*common, "--out", str(tmp_path / "plain.json")]) == 0
    assert main([*common, "--autoguide", str(copy), "--out", str(tmp_path / "self.json")]) == 0
    assert main([*common, "--autoguide", "1", "--autoguide-weight", "50", "--out", str(tmp_path / "early.json")]) == 0
    plain, same, early = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("plain", "self", "early"))
    assert same["fid"] == pytest.approx(plain["fid"], rel=1e-3)
    assert early["fid"] != pytest.approx(plain["fid"], rel=1e-3)
    assert plain["autoguide"] is None and early["autoguide"]["step"] == 1 and early["autoguide"]["weight"] == 50.0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "plain.json"), "--autoguide", "1"]) == 2
    assert "guides the sampling of a run" in capsys.readouterr().err


def test_interpolate_is_autoguided_like_sample(tmp_path, tiny_overrides, capsys):
    # a guide with the model's own weights leaves the strip as it is ((1 + w) D - w D = D); an earlier checkpoint
    # changes it, and the default file name says which guide at which weight. 30 training steps: after 2, every
    # pixel of the strip saturates, guided or not, and the guide could not show.
    from PIL import Image

    from dreamdata.cli import main
    from dreamdata.config import load_config
    from dreamdata.training.trainer import train

    run = train(load_config("tiny", [*tiny_overrides, "train.steps=30", "train.sample_grid=false",
                                     "train.checkpoint_every=10", "train.keep_checkpoints=0"])).run_dir
    copy = run / "checkpoints" / "step-000000099.safetensors"  # not a training step: a copy of the last weights
    shutil.copy(run / "checkpoints" / "step-000000030.safetensors", copy)
    common = ["interpolate", str(run), "--class", "0", "--frames", "3", "--steps", "5", "--device", "cpu"]

    def strip(*extra, out=None):
        assert main([*common, *extra, *(["--out", str(out)] if out else [])]) == 0
        path = out or next((run / "samples").glob("interpolate-*ag2-step10.png"))
        return np.asarray(Image.open(path)).astype(int)

    plain = strip(out=tmp_path / "plain.png")
    itself = strip("--autoguide", str(copy), "--autoguide-weight", "2", out=tmp_path / "self.png")
    assert np.abs(plain - itself).max() <= 1
    early = strip("--autoguide", "10", "--autoguide-weight", "2")
    assert np.abs(plain - early).max() > 1
    assert "autoguided by step-000000010.safetensors at w=2" in capsys.readouterr().out
