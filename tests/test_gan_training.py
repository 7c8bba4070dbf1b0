"""A GAN run through the same toolkit as a diffusion run: train (exact resume, DDP), sample, evaluate, dream,
interpolate, in-training evaluation and the sweep - and the diffusion-only options refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_pattern_images, torchrun_train
from dreamdata.cli import main
from dreamdata.config import load_config
from dreamdata.errors import ConfigError
from dreamdata.training import checkpoint as ckpt
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.trainer import train


@pytest.fixture
def gan_overrides(tmp_path):
    """The `gan` preset shrunk to a seconds-long run on 28-px pattern images (3 classes x 16)."""
    images, labels = make_pattern_images(per_class=16, size=28)
    path = tmp_path / "tiny28.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["hstripes", "vstripes", "square"]))
    return [f"data.dataset=npz:{path}", f"runs_dir={tmp_path / 'runs'}", "data.val_fraction=0.1",
            "train.minutes=null", "train.steps=12", "train.batch_size=8", "model.base_channels=8",
            "model.latent_dim=16", "train.log_every=3", "train.val_every=6", "train.checkpoint_every=6",
            "train.sample_grid=false", "train.device=cpu", "train.progress=false"]


@pytest.fixture
def gan_run(gan_overrides):
    return train(load_config("gan", gan_overrides)).run_dir


def _losses(run_dir: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["loss_generator"], r.get("val_loss")) for r in read_metrics(run_dir)]


def test_gan_config_needs_both_keys_and_valid_gan_settings():
    with pytest.raises(ConfigError, match="process.kind=gan and model.network=unet"):
        load_config("demo", ["process.kind=gan"])
    with pytest.raises(ConfigError, match="process.kind=gaussian and model.network=dcgan"):
        load_config("demo", ["model.network=dcgan"])
    with pytest.raises(ConfigError, match="process.diffaugment"):
        load_config("gan", ["process.diffaugment=color,zoom"])
    with pytest.raises(ConfigError, match="process.gan_loss"):
        load_config("gan", ["process.gan_loss=wasserstein"])
    with pytest.raises(ConfigError, match="process.r1_gamma"):
        load_config("gan", ["process.r1_gamma=-1"])


def test_gan_run_directory_holds_both_networks_their_optimizers_and_the_ema(gan_run):
    loaded = ckpt.load_latest(gan_run, with_state=True)
    assert loaded.weights.step == 12
    assert any(k.startswith("generator.") for k in loaded.weights.model)
    assert any(k.startswith("discriminator.") for k in loaded.weights.model)
    generator_keys = {k[len("generator."):] for k in loaded.weights.model if k.startswith("generator.")}
    assert set(loaded.weights.ema) == generator_keys  # the EMA is of G only
    state = loaded.state
    assert {"optimizer", "scheduler", "discriminator_optimizer", "discriminator_scheduler"} <= set(state)
    records = read_metrics(gan_run)
    assert [r["step"] for r in records] == [3, 6, 9, 12]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_generator"]) for r in records)
    assert "val_loss" in records[1] and "val_loss_ema" in records[1]


def test_resumed_gan_run_matches_uninterrupted_run(gan_overrides):
    whole = train(load_config("gan", gan_overrides))
    interrupted = train(load_config("gan", gan_overrides), stop_at_step=7)  # last checkpoint: step 6
    resumed = train(load_config("gan", gan_overrides), resume=interrupted.run_dir)
    assert resumed.step == 12
    assert _losses(resumed.run_dir) == _losses(whole.run_dir)
    a = ckpt.load_weights(ckpt.latest_checkpoint(whole.run_dir))
    b = ckpt.load_weights(ckpt.latest_checkpoint(resumed.run_dir))
    for part in ("model", "ema"):
        for name, tensor in getattr(a, part).items():
            assert torch.equal(tensor, getattr(b, part)[name]), (part, name)


def test_sample_evaluate_and_dream_a_gan_run(gan_run, tmp_path, tiny_extractor_file, capsys):
    out = tmp_path / "samples"
    assert main(["sample", str(gan_run), "--n", "4", "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "sample.json").read_text())
    assert record["sampler"] == "gan" and record["steps"] == 1
    with np.load(out / "samples.npz") as saved:
        assert saved["images"].shape[0] == 12 and sorted(set(saved["labels"].tolist())) == [0, 1, 2]

    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", str(gan_run), "--n", "12", "--ref-n", "12", "--fid-weights", str(tiny_extractor_file),
                 "--metrics", "fid,kid", "--device", "cpu", "--out", str(metrics)]) == 0
    scores = json.loads(metrics.read_text())
    assert scores["sampler"] == "gan" and np.isfinite(scores["fid"])

    dreamed = tmp_path / "dreamed"
    assert main(["dream", str(gan_run), "--per-class", "5", "--out", str(dreamed), "--device", "cpu"]) == 0
    manifest = json.loads((dreamed / "manifest.json").read_text())
    assert manifest["spec"]["sampler"] == "gan" and manifest["spec"]["steps"] == 1
    # the dreamed images are the generator's: the same as `sample` draws for the same global indices
    with np.load(out / "samples.npz") as sampled:
        first = {int(i): image for i, image in zip(sampled["indices"], sampled["images"])}
    with np.load(dreamed / "dataset.npz") as data:
        assert data["images"].shape[0] == 15 and np.bincount(data["labels"]).tolist() == [5, 5, 5]
        common = [k for k, index in enumerate(data["indices"]) if int(index) in first]
        assert len(common) == 12  # sample --n 4 drew indices 0..11, dream --per-class 5 indices 0..14
        for k in common:  # same global index, same code, same image (to a rounding level); both NHWC
            difference = data["images"][k].astype(int) - first[int(data["indices"][k])]
            assert np.abs(difference).max() <= 1


@pytest.mark.parametrize("options, option", [
    (["--guidance", "1"], "--guidance"), (["--steps", "10"], "--steps"), (["--sampler", "ddim"], "--sampler"),
    (["--trajectory", "2"], "--trajectory"), (["--from-test", "4"], "--from-test"),
])
def test_diffusion_only_sampling_options_are_refused_for_a_gan(gan_run, tmp_path, capsys, options, option):
    assert main(["sample", str(gan_run), "--n", "2", "--device", "cpu",
                 "--out", str(tmp_path / "refused"), *options]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and option in error[0] and "GAN" in error[0], error
    assert not (tmp_path / "refused").exists()


def test_dream_and_evaluate_refuse_guidance_and_steps_for_a_gan(gan_run, tmp_path, capsys, tiny_extractor_file):
    assert main(["dream", str(gan_run), "--per-class", "2", "--out", str(tmp_path / "d"), "--guidance", "2",
                 "--device", "cpu"]) == 2
    assert "--guidance" in capsys.readouterr().err
    assert main(["evaluate", str(gan_run), "--n", "6", "--steps", "20", "--device", "cpu",
                 "--fid-weights", str(tiny_extractor_file)]) == 2
    assert "--steps" in capsys.readouterr().err


def _sampled(run_dir: Path, tmp_path: Path, seed: int, class_name: str) -> np.ndarray:
    out = tmp_path / f"sample-{seed}-{class_name}"
    assert main(["sample", str(run_dir), "--n", "1", "--class", class_name, "--seed", str(seed),
                 "--out", str(out), "--device", "cpu"]) == 0
    with np.load(out / "samples.npz") as saved:
        return saved["images"][0]


def _strip_frames(path: Path, frames: int) -> list[np.ndarray]:
    """Cut a ``uint8_grid`` strip (padding 2) back into its frames, HWC uint8."""
    from PIL import Image

    strip = np.asarray(Image.open(path))
    strip = strip[..., None] if strip.ndim == 2 else strip
    size = (strip.shape[1] - 2) // frames - 2
    return [strip[2:2 + size, 2 + k * (size + 2):2 + k * (size + 2) + size] for k in range(frames)]


@pytest.mark.parametrize("path", ["slerp", "linear"])
def test_gan_interpolation_end_frames_are_the_two_samples(gan_run, tmp_path, path):
    out = tmp_path / "strip.png"
    assert main(["interpolate", str(gan_run), "--class", "vstripes", "--seed", "3", "--seed2", "7",
                 "--frames", "5", "--path", path, "--out", str(out), "--device", "cpu"]) == 0
    frames = _strip_frames(out, 5)
    for frame, seed in ((frames[0], 3), (frames[-1], 7)):
        sample = _sampled(gan_run, tmp_path, seed, "vstripes")  # HWC
        assert np.abs(frame.astype(int) - sample.astype(int)).max() <= 1


def test_gan_class_interpolation_end_frames_are_the_two_classes(gan_run, tmp_path):
    out = tmp_path / "classes.png"
    assert main(["interpolate", str(gan_run), "--class", "hstripes", "--to-class", "square", "--seed", "2",
                 "--frames", "4", "--out", str(out), "--device", "cpu"]) == 0
    frames = _strip_frames(out, 4)
    # `sample --class A` draws its first image with the code of global index A; `--class B` with index B,
    # so compare against the generator directly with the interpolation's code (that of class A's index)
    from dreamdata.process.rng import per_sample_noise
    from dreamdata.sampling.saving import to_uint8
    from dreamdata.training.pretrained import load_trained

    model = load_trained(gan_run)
    z = per_sample_noise(2, [0], tuple(model.network.start_shape), "cpu")
    with torch.no_grad():
        a = to_uint8(model.network(z, torch.tensor([0])))[0, 0].numpy()
        b = to_uint8(model.network(z, torch.tensor([2])))[0, 0].numpy()
    assert np.abs(frames[0][..., 0].astype(int) - a).max() <= 1
    assert np.abs(frames[-1][..., 0].astype(int) - b).max() <= 1
    assert np.abs(frames[1][..., 0].astype(int) - a).max() > 0  # the middle frames do move


def test_gan_evaluation_during_training_logs_metrics(gan_overrides, tiny_extractor_file):
    overrides = gan_overrides + ["evaluation.every=6", "evaluation.samples=12", "evaluation.reference_count=12",
                                 f"evaluation.fid_weights={tiny_extractor_file}", "evaluation.metrics=[fid,kid]"]
    run_dir = train(load_config("gan", overrides)).run_dir
    evaluated = [r for r in read_metrics(run_dir) if "eval_fid" in r]
    assert [r["step"] for r in evaluated] == [6, 12]
    assert all(np.isfinite(r["eval_fid"]) for r in evaluated)
    assert (run_dir / "metrics.png").is_file()


def test_a_sweep_scores_a_gan_arm_like_a_diffusion_arm(gan_overrides, tmp_path, tiny_extractor_file):
    import yaml

    from dreamdata.experiments.runner import resolve_arms, run_sweep
    from dreamdata.experiments.sweep_config import load_sweep

    config = tmp_path / "gan-sweep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "gan-sweep", "base": "gan", "overrides": gan_overrides,
        "train_axes": {"process.gan_loss": ["non_saturating", "hinge"]},
        "sampling": {"sampler": "ddim", "steps": 20},  # diffusion settings: a GAN arm samples in one pass
        "metrics": ["fid", "held_out_loss"],
        "evaluation": {"n": 12, "ref_n": 12, "fid_weights": str(tiny_extractor_file), "mosaic_per_class": 2}}))
    out = tmp_path / "sweep"
    sweep = load_sweep(str(config), [])
    first, second = (arm.name for arm in resolve_arms(sweep, out))
    run_sweep(sweep, out, only_arms=[second])  # one piece: the second arm alone (--arm)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["arm"] for line in lines] == [second]
    assert not (out / "arms" / first).exists()
    finished = next((out / "cells" / second).rglob("result.json"))
    stamp = finished.stat().st_mtime_ns
    run_sweep(sweep, out)  # the rest: the first arm is trained and scored, the second's cell is kept
    assert finished.stat().st_mtime_ns == stamp
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(line["arm"] for line in lines) == sorted([first, second])
    for line in lines:
        assert line["sampling"]["sampler"] == "gan" and line["sampling"]["steps"] == 1
        assert np.isfinite(line["metrics"]["fid"]) and line["metrics"]["held_out_loss"] is not None


@pytest.mark.slow
def test_gan_ddp_two_cpu_processes_train_and_resume_exactly(gan_overrides, tmp_path):
    """torchrun with 2 gloo processes and R1 on (a double backward through DDP): replicas stay identical
    (checked at the end of every run), and a resumed run continues every rank's stream exactly."""
    common = [*gan_overrides, "train.num_threads=1", "process.r1_gamma=1.0"]
    torchrun_train(["gan", *common, f"--run-dir={tmp_path / 'whole'}"])
    torchrun_train(["gan", *common, "train.steps=6", f"--run-dir={tmp_path / 'parts'}"])
    torchrun_train(["--resume", str(tmp_path / "parts"), "train.steps=12"])
    assert _losses(tmp_path / "parts") == _losses(tmp_path / "whole")


def test_an_image_size_dcgan_has_no_layout_for_is_one_line_and_leaves_nothing(gan_overrides, tmp_path, capsys):
    assert main(["train", "gan", *gan_overrides, "data.image_size=16"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "data.image_size" in error[0] and "28, 32, 64" in error[0], error
    assert not (tmp_path / "runs").exists()
