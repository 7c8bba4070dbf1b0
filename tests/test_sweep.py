"""`dreamdata sweep` on the tiny npz fixture: cells and keys, resume, new axis values, refused changes,
shared noise, shards, and the cold-diffusion study through the sweep (its figures: test_sweep_figures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dreamdata.cli import main
from dreamdata.errors import ConfigError
from dreamdata.experiments import runner
from dreamdata.experiments.runner import resolve_arms, run_sweep
from dreamdata.experiments.sweep_config import load_sweep, parse_sweep

TINY_MODEL = {"network": "unet", "class_conditional": True, "base_channels": 8, "channel_mults": [1, 2],
              "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0}
TINY_TRAIN = {"batch_size": 8, "steps": 4, "warmup_steps": 1, "log_every": 2, "val_every": 2, "val_batches": 1,
              "checkpoint_every": 2, "sample_grid": False, "progress": False, "device": "cpu", "p_uncond": 0.2}


@pytest.fixture
def base_file(tiny_npz, tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"dataset": f"npz:{tiny_npz}", "val_fraction": 0.1, "hflip": False},
        "process": {"schedule": "linear", "num_steps": 20}, "model": TINY_MODEL, "train": TINY_TRAIN}))
    return path


def write_sweep(tmp_path: Path, base_file: Path, extractor: Path, **changes) -> Path:
    tree = {
        "name": "tiny-sweep", "base": str(base_file),
        "train_axes": {"process.schedule": ["linear", "cosine"]},
        "sampling": {"sampler": "ddim", "steps": 3},
        "sampling_axes": {"guidance": [0.0, 1.0]},
        "checkpoints": ["last"],
        "metrics": ["fid", "kid", "held_out_loss"],
        "evaluation": {"n": 6, "ref_n": 12, "batch": 4, "fid_weights": str(extractor), "mosaic_per_class": 2},
    }
    tree.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))


def results_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_cells_are_the_product_of_the_axes(base_file, tmp_path):
    tree = {"base": str(base_file), "train_axes": {"process.schedule": ["linear", "cosine"],
                                                   "train.p_uncond": [0.0, 0.1]},
            "sampling_axes": {"sampler": ["ddpm", "ddim"], "steps": [5, 10, 50]}}
    sweep = parse_sweep(tree, "test")
    assert [a.name for a in sweep.arms] == ["schedule-linear_p_uncond-0.0", "schedule-linear_p_uncond-0.1",
                                            "schedule-cosine_p_uncond-0.0", "schedule-cosine_p_uncond-0.1"]
    assert len(sweep.cells) == 6 and sweep.cells[0]["sampler"] == "ddpm" and sweep.cells[0]["steps"] == 5
    assert sweep.cells[-1] == {**sweep.cells[-1], "sampler": "ddim", "steps": 50, "guidance": 0.0}
    arms = resolve_arms(sweep, tmp_path / "out")
    assert arms[3].config.process.schedule == "cosine" and arms[3].config.train.p_uncond == 0.1
    assert arms[0].config.process.schedule == "linear" and arms[0].config.train.p_uncond == 0.0
    explicit = parse_sweep({"base": str(base_file), "arms": [{"name": "a", "process.num_steps": 30}],
                            "cells": [{"sampler": "ddim", "steps": 4}, {"sampler": "ddpm"}]}, "test")
    assert [a.name for a in explicit.arms] == ["a"] and [c["sampler"] for c in explicit.cells] == ["ddim", "ddpm"]
    assert explicit.cells[1]["steps"] == 100  # the default fills what a cell leaves out


def test_bad_sweep_files_name_the_key(base_file, tmp_path):
    for tree, match in (({"base": str(base_file), "metrics": ["fdi"]}, "unknown metric 'fdi'"),
                        ({"base": str(base_file), "sampling": {"guidance": -1}}, "guidance -1"),
                        ({"base": str(base_file), "sampling_axes": {"steps": 5}}, "axis 'steps'"),
                        ({"base": str(base_file), "sampling": {"sampelr": "ddim"}}, "'sampelr'"),
                        ({"base": str(base_file), "checkpoints": [0]}, "checkpoints 0"),
                        ({"base": str(base_file), "evaluation": {"n": 0}}, "evaluation.n")):
        with pytest.raises(ConfigError, match=match):
            parse_sweep(tree, "test")
    with pytest.raises(ConfigError, match="arm 'schedule-sigmoid'.*process.schedule"):
        resolve_arms(parse_sweep({"base": str(base_file), "train_axes": {"process.schedule": ["sigmoid"]}},
                                 "test"), tmp_path)


@pytest.mark.slow
def test_sweep_end_to_end_resume_and_new_axis_values(base_file, tiny_extractor_file, tmp_path, cache, monkeypatch):
    path = write_sweep(tmp_path, base_file, tiny_extractor_file)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    results = results_of(out)
    assert [r["cell"] for r in results] == [
        "schedule-linear/step-4/ddim-3steps-w0", "schedule-linear/step-4/ddim-3steps-w1",
        "schedule-cosine/step-4/ddim-3steps-w0", "schedule-cosine/step-4/ddim-3steps-w1"]
    for r in results:
        assert r["n"] == 6 and r["n_reference"] == 12 and r["metrics"]["fid"] > 0
        assert r["network_evaluations"] == 6 * 3 * (2 if r["sampling"]["guidance"] else 1)
        # the held-out loss at step 4 is the one the run logged at step 4
        logged = [json.loads(x) for x in (out / "arms" / r["arm"] / "metrics.jsonl").read_text().splitlines()]
        assert r["metrics"]["held_out_loss"] == [x for x in logged if "val_loss_ema" in x][-1]["val_loss_ema"]
    summary = (out / "summary.md").read_text()
    assert summary.count("| schedule-") == 4 and "FID" in summary and "guidance" in summary
    for figure in ("metric-vs-guidance.png", "mosaic.png", "loss.png", "alpha_bar.png"):
        assert (out / figure).is_file(), figure

    # re-running does nothing: no cell is sampled again
    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was scored again")

    monkeypatch.setattr(runner, "train_arm", lambda arm, log: (arm.run_dir / runner.ARM_DONE).is_file() or refuse())
    from dreamdata.experiments import cell_scoring

    original_score = cell_scoring.CellScorer.score
    monkeypatch.setattr(cell_scoring.CellScorer, "score", refuse)
    run_sweep(load_sweep(path), out)
    assert results_of(out) == results

    # a new guidance value runs only its two cells
    scored = []

    def counting(self, cell, run_dir, cell_dir):
        scored.append(cell.key)
        return original_score(self, cell, run_dir, cell_dir)

    monkeypatch.setattr(cell_scoring.CellScorer, "score", counting)
    run_sweep(load_sweep(path, ["sampling_axes={guidance: [0.0, 1.0, 2.0]}"]), out)
    assert scored == ["schedule-linear/step-4/ddim-3steps-w2", "schedule-cosine/step-4/ddim-3steps-w2"]
    again = results_of(out)
    assert len(again) == 6 and [r for r in again if r["sampling"]["guidance"] != 2.0] == results

    # a change that invalidates the finished cells is refused, naming the key
    with pytest.raises(ConfigError, match="evaluation.n"):
        run_sweep(load_sweep(path, ["evaluation.n=8"]), out)
    with pytest.raises(ConfigError, match="train.lr"):
        run_sweep(load_sweep(path, ["train.lr=0.5"]), out)
    assert main(["sweep", str(path), "--out", str(out), "metrics=[fid]"]) == 2


def test_a_config_key_added_since_an_arm_was_trained_is_read_as_its_default(base_file, tiny_extractor_file,
                                                                            tmp_path):
    """A sweep.json written before a config key existed (here process.sigma_data, added with EDM) still
    matches an arm that leaves the key at its default (0.5), and is refused when the arm sets another value."""
    from dreamdata.experiments.runner import SETTINGS_FILE, check_settings

    out = tmp_path / "out"
    out.mkdir()
    sweep = load_sweep(write_sweep(tmp_path, base_file, tiny_extractor_file))
    check_settings(sweep, resolve_arms(sweep, out), out)
    stored = json.loads((out / SETTINGS_FILE).read_text())
    for arm in stored["arms"].values():
        assert arm.pop("process.sigma_data") == 0.5
    (out / SETTINGS_FILE).write_text(json.dumps(stored))
    check_settings(sweep, resolve_arms(sweep, out), out)  # no error: the missing key meant the default
    (out / SETTINGS_FILE).write_text(json.dumps(stored))
    changed = load_sweep(write_sweep(tmp_path, base_file, tiny_extractor_file), ["process.sigma_data=1.0"])
    with pytest.raises(ConfigError, match="process.sigma_data=None, now 1.0"):
        check_settings(changed, resolve_arms(changed, out), out)


def test_every_cell_starts_from_the_same_noise(base_file, tiny_extractor_file, tmp_path, cache, monkeypatch):
    """The starting noise of sample k is the same in every cell: captured from the samplers' first state."""
    from dreamdata.sampling import generate as generate_module

    starts = {}
    original = generate_module.generate

    def recording(network, process, labels, count, seed, **kwargs):
        seen = []

        def on_step(indices, i, t, x_t, x0_hat):
            if i == 0:
                seen.append((indices.clone(), x_t.clone()))
        kwargs["on_step"] = on_step
        images = original(network, process, labels, count, seed, **kwargs)
        order = np.argsort(np.concatenate([s[0].numpy() for s in seen]))
        starts[(kwargs["sampler"], kwargs["steps"], kwargs["guidance_scale"])] = \
            np.concatenate([s[1].numpy() for s in seen])[order]
        return images

    monkeypatch.setattr(generate_module, "generate", recording)
    path = write_sweep(tmp_path, base_file, tiny_extractor_file, train_axes={},
                       sampling_axes={"sampler": ["ddim", "ddpm"], "steps": [2, 3]}, metrics=["fid"])
    run_sweep(load_sweep(path), tmp_path / "out")
    assert len(starts) == 4
    first = next(iter(starts.values()))
    assert first.shape == (6, 1, 8, 8) and abs(first.std() - 1) < 0.3  # N(0, I) noise
    for value in starts.values():
        assert np.array_equal(value, first)


@pytest.mark.slow
def test_shards_give_the_same_results_as_one_process(base_file, tiny_extractor_file, tmp_path, cache):
    path = write_sweep(tmp_path, base_file, tiny_extractor_file, metrics=["fid", "kid"],
                       checkpoints=["all"])
    run_sweep(load_sweep(path), tmp_path / "one")
    for index in (1, 0):  # one after the other: shard 1 trains what it needs itself
        run_sweep(load_sweep(path), tmp_path / "two", shard=(index, 2), poll_seconds=0.01)
    one, two = results_of(tmp_path / "one"), results_of(tmp_path / "two")
    assert len(one) == 8  # 2 arms x 2 checkpoints (steps 2 and 4) x 2 guidance values

    def comparable(results):
        return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "checkpoint", "train_minutes")}
                for r in results]

    assert comparable(one) == comparable(two)
    assert {r["checkpoint_step"] for r in one} == {2, 4}
    assert (tmp_path / "one" / "metric-vs-step.png").is_file()


def test_interrupted_cell_is_finished_on_resume(base_file, tiny_extractor_file, tmp_path, cache, monkeypatch):
    """A cell killed mid-way leaves no result; the re-run scores it (once) and matches an uninterrupted run."""
    from dreamdata.experiments import cell_scoring

    path = write_sweep(tmp_path, base_file, tiny_extractor_file, train_axes={}, metrics=["fid"])
    run_sweep(load_sweep(path), tmp_path / "whole")
    original = cell_scoring.CellScorer.score
    calls = []

    def dies_on_second(self, cell, run_dir, cell_dir):
        calls.append(cell.key)
        if len(calls) == 2:
            original(self, cell, run_dir, cell_dir)  # writes samples.npz, then dies before result.json
            raise KeyboardInterrupt
        return original(self, cell, run_dir, cell_dir)

    monkeypatch.setattr(cell_scoring.CellScorer, "score", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_sweep(path), tmp_path / "cut")
    assert len(results_of(tmp_path / "cut")) == 1
    calls.clear()
    monkeypatch.setattr(cell_scoring.CellScorer, "score",
                        lambda self, *a: (calls.append(a[0].key), original(self, *a))[1])
    run_sweep(load_sweep(path), tmp_path / "cut")
    assert calls == ["base/step-4/ddim-3steps-w1"]
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "checkpoint", "train_minutes")}
             for r in results_of(tmp_path / "whole")]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s", "checkpoint",
                                                              "train_minutes")} for r in results_of(tmp_path / "cut")]


def test_blur_robustness_is_exact_with_an_oracle_denoiser(tiny_npz):
    """An oracle that knows the sharp image predicts ε from it, so DDIM lands on the sharp image (RMSE 0);
    the blurred input's own score is that of blurring alone, recomputed here by hand."""
    import torch

    from dreamdata.config import ProcessConfig
    from dreamdata.evaluation.blur_robustness import blur_images, blur_robustness
    from dreamdata.process import build_process

    process = build_process(ProcessConfig(schedule="linear", num_steps=50))
    with np.load(tiny_npz) as archive:
        clean = torch.from_numpy(archive["images"][:6]).permute(0, 3, 1, 2).contiguous()
    sharp = clean.float() / 127.5 - 1

    class Oracle(torch.nn.Module):
        num_classes = 0

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x_t, t, y=None):
            a = process.schedule.alpha_bar.to(x_t)[t].view(-1, 1, 1, 1)
            return (x_t - a.sqrt() * sharp[:len(x_t)]) / (1 - a).sqrt()

    rows = blur_robustness(Oracle(), process, clean, sigmas=[0.0, 1.5], timesteps=[10, 40], batch_size=6)
    assert [(r["sigma"], r["t"]) for r in rows] == [(0.0, 10), (1.5, 10), (0.0, 40), (1.5, 40)]
    for row in rows:
        assert row["rmse"] < 1e-5 and row["ssim"] > 0.9999
    by_hand = ((blur_images(sharp, 1.5) - sharp) / 2).pow(2).mean(dim=(1, 2, 3)).sqrt().mean()
    assert rows[1]["blurred_rmse"] == pytest.approx(float(by_hand), rel=1e-5) and rows[1]["blurred_rmse"] > 0.05
    assert rows[0]["blurred_rmse"] == 0 and rows[0]["blurred_psnr"] is None  # identical: PSNR infinite


def test_cold_study_through_the_sweep_reproduces_the_old_runner(tiny_npz, tiny_extractor_file, tmp_path, cache):
    """`configs/experiments/constant-schedules.yaml`'s shape on the tiny fixture gives the numbers the former
    `dreamdata.cold_study` runner gave on the same study (tests/data/cold_study_results.json)."""
    expected = json.loads((Path(__file__).parent / "data" / "cold_study_results.json").read_text())["arms"]
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"dataset": f"npz:{tiny_npz}", "val_fraction": 0.1, "hflip": True},  # the old default
        "model": {**TINY_MODEL, "class_conditional": False},
        "train": {"batch_size": 8, "steps": 3, "warmup_steps": 1, "log_every": 3, "val_every": 3, "val_batches": 1,
                  "checkpoint_every": 0, "sample_grid": False, "progress": False, "device": "cpu"}}))
    sweep = tmp_path / "cold.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "tiny-cold", "base": str(base), "table": "cold-study",
        "arms": [{"name": "blur", "process": {"kind": "blur", "num_steps": 6, "kernel_size": 5, "blur_beta": 1.0}},
                 {"name": "noise-constant", "process": {"kind": "gaussian", "schedule": "constant",
                                                        "constant_beta": 0.1, "num_steps": 20}}],
        "sampling": {"sampler": {"gaussian": "ddim", "blur": "cold-improved"}, "steps": {"gaussian": 4, "blur": None}},
        "metrics": ["fid", "restoration", "held_out_loss"],
        "evaluation": {"n": 6, "ref_n": 20, "batch": 4, "reconstruction_count": 5,
                       "fid_weights": str(tiny_extractor_file)}}))
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out)]) == 0
    for r in results_of(out):
        old = expected[r["arm"]]
        m = r["metrics"]
        assert r["process"]["kind"] == old["process"] and r["process"]["num_steps"] == old["num_steps"]
        assert r["sampling"]["sampler"] == old["sampler"] and r["sampling"]["steps"] == old["sampling_steps"]
        assert r["checkpoint_step"] == old["train_steps"] and r["images_seen"] == old["images_seen"]
        assert m["held_out_loss"] == pytest.approx(old["held_out_loss"], rel=1e-6)
        for key in ("rmse", "ssim", "psnr"):
            assert m["restoration"][key] == pytest.approx(old[key], rel=1e-5), key
        assert m["fid"] == pytest.approx(old["fid"], rel=1e-4)
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].startswith("| arm | process | T | train steps (images) | train min |")
    assert "| blur | blur (constant) | 6 | 3 (24) |" in table and "0.4038 | 0.0063 | 7.88 | 0.3 |" in table


@pytest.mark.slow
def test_trained_blur_arm_restores_better_than_its_degraded_input(tiny_npz, tmp_path, cache):
    """150 steps (seconds) teach the 8x8 blur arm to undo its blur: through the sweep's restoration metric,
    the restored test images are much closer to the originals than the fully blurred inputs are."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"dataset": f"npz:{tiny_npz}", "val_fraction": 0.1},
        "model": {**TINY_MODEL, "class_conditional": False},
        "process": {"kind": "blur", "num_steps": 6, "kernel_size": 5, "blur_beta": 1.0},
        "train": {**TINY_TRAIN, "steps": 150, "checkpoint_every": 0, "log_every": 50, "val_every": 50}}))
    sweep = tmp_path / "blur.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(base), "metrics": ["restoration"], "sampling": {"steps": None},
                                     "evaluation": {"n": 3, "reconstruction_count": 8}}))
    run_sweep(load_sweep(sweep), tmp_path / "out")
    (r,) = results_of(tmp_path / "out")
    restoration = r["metrics"]["restoration"]
    assert r["checkpoint_step"] == 150 and r["sampling"]["sampler"] == "cold-improved"
    assert restoration["rmse"] < 0.5 * restoration["degraded_rmse"]
    assert restoration["psnr"] > restoration["degraded_psnr"] + 6  # dB
    assert restoration["ssim"] > restoration["degraded_ssim"] + 0.5


def test_dry_run_counts_network_evaluations_by_hand(base_file, tiny_extractor_file, tmp_path, capsys):
    """N x steps per cell, twice for a guided cell (conditional and unconditional halves); nothing is trained."""
    from dreamdata.experiments.cost import estimate_sweep

    path = write_sweep(tmp_path, base_file, tiny_extractor_file, checkpoints=["all"])
    sweep = load_sweep(path)
    report = estimate_sweep(sweep, resolve_arms(sweep, tmp_path / "out"))
    # 2 checkpoints (steps 2 and 4 of a 4-step run with checkpoint_every 2) x (6 x 3 + 6 x 3 x 2) per arm
    assert [c["network_evaluations"] for c in report["arms"][0]["cells"]] == [2 * 6 * 3, 2 * 6 * 3 * 2]
    assert report["total_network_evaluations"] == 2 * (36 + 72) and report["total_cells"] == 8
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "total: 2 arms, 8 cells, 216 network evaluations" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_dry_run_times_training_with_the_arms_own_optimiser_steps(base_file, tiny_extractor_file, tmp_path,
                                                                   monkeypatch):
    """Training minutes come from timed steps of the arm's objective, not a passes-per-image guess: with a
    stand-in objective whose step takes a known 20 ms, 4 steps of batch B cost 4 x 0.02 s, whatever the
    network's forward rate; and the dry run leaves torch's global RNG as it found it."""
    import time as real_time

    import torch

    from dreamdata.experiments import cost
    from dreamdata.training import objectives

    class TwentyMillisecondStep:
        def __init__(self, *args, **kwargs):
            self.calls = 0

        def step(self, images, labels, agree):
            clock[0] += 0.02
            return torch.zeros(1), True

    clock = [0.0]
    forward_clock = real_time.perf_counter
    monkeypatch.setattr(objectives, "build_objective", lambda *a, **k: TwentyMillisecondStep())
    monkeypatch.setattr(cost.time, "perf_counter", lambda: clock[0] + forward_clock())
    sweep = load_sweep(write_sweep(tmp_path, base_file, tiny_extractor_file))
    arms = resolve_arms(sweep, tmp_path / "out")
    rng_before = torch.random.get_rng_state()
    report = cost.estimate_sweep(sweep, arms)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    batch = arms[0].config.train.batch_size
    steps = arms[0].config.train.steps
    for arm in report["arms"]:
        assert arm["train_images_per_s"] == pytest.approx(batch / 0.02, rel=0.05)
        assert arm["train_minutes"] == pytest.approx(round(steps * 0.02 / 60, 1), abs=0.05)


def test_an_arm_trained_elsewhere_with_weights_alone_is_scored(base_file, tiny_extractor_file, tmp_path, cache):
    """A run that brought back only its weights (no ``.state.pt``: it cannot be resumed, it can be sampled) is an
    arm of another sweep at both of its checkpoints (steps 2 and 4 of a 4-step run saving every 2)."""
    import shutil

    first = write_sweep(tmp_path, base_file, tiny_extractor_file, metrics=["fid"], train_axes={},
                        sampling_axes={})
    run_sweep(load_sweep(first), tmp_path / "trained")
    (arm_dir,) = (p for p in (tmp_path / "trained" / "arms").iterdir() if p.is_dir())
    weights_only = tmp_path / "weights-only"
    shutil.copytree(arm_dir, weights_only)
    for state in weights_only.glob("checkpoints/*.state.pt"):
        state.unlink()
    assert sorted(p.name for p in weights_only.glob("checkpoints/step-*")) == [
        "step-000000002.safetensors", "step-000000004.safetensors"]
    second = tmp_path / "second.yaml"
    second.write_text(first.read_text())
    tree = yaml.safe_load(second.read_text())
    tree.update(arms=[{"name": "brought-back", "run": str(weights_only)}], checkpoints=["all"])
    second.write_text(yaml.safe_dump(tree))
    run_sweep(load_sweep(second), tmp_path / "scored")
    assert sorted(r["checkpoint_step"] for r in results_of(tmp_path / "scored")) == [2, 4]


def test_dry_run_of_a_trained_arm_times_no_training_and_loads_no_data(base_file, tiny_extractor_file, tmp_path,
                                                                      cache, monkeypatch, capsys):
    """Once the arms are trained, a dry run neither times optimiser steps nor loads the dataset (both raise here):
    the data shape comes from each run's data.json, and the training minutes are the wall-clock time its run
    logged, the last elapsed_s of metrics.jsonl over 60 - read here from the file, independently."""
    from dreamdata.experiments import cost

    path = write_sweep(tmp_path, base_file, tiny_extractor_file, metrics=["fid"])
    out = tmp_path / "out"
    run_sweep(load_sweep(path), out)
    capsys.readouterr()

    def forbidden(*args, **kwargs):
        raise AssertionError("a trained arm's dry run must not time training or load data")

    monkeypatch.setattr(cost, "_training_rate", forbidden)
    monkeypatch.setattr("dreamdata.data.load_dataset", forbidden)
    sweep = load_sweep(path)
    report = cost.estimate_sweep(sweep, resolve_arms(sweep, out), out)
    for arm in report["arms"]:
        lines = (Path(arm["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        logged = [json.loads(line)["elapsed_s"] for line in lines if '"elapsed_s"' in line][-1]
        assert arm["trained"] and arm["train_minutes_logged"] and arm["train_images_per_s"] is None
        assert arm["train_minutes"] == pytest.approx(round(logged / 60, 1))
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("min as logged") == 2


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments")
                                         .glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_sweep_configs_resolve(path, tmp_path):
    """Every shipped sweep file (skipping a base run config such as constant-schedules-base.yaml) builds
    its arms' run configs and each cell's sampling settings, so `dreamdata sweep` does not fail hours in."""
    from dreamdata.experiments.cells import resolve_sampling
    from dreamdata.process import build_process

    if path.name.endswith("-base.yaml"):
        pytest.skip("a base run config, not a sweep")
    sweep = load_sweep(str(path), [])
    arms = resolve_arms(sweep, tmp_path / "out")
    assert arms and len({arm.name for arm in arms}) == len(arms)
    for arm in arms:
        process = build_process(arm.config.process)
        for settings in sweep.cells:
            sampling = resolve_sampling(settings, arm.config.process.kind, process.num_steps, process,
                                        conditional=arm.config.model.class_conditional)
            assert 1 <= sampling["steps"] <= process.num_steps


def test_nll_metric_once_per_checkpoint_and_equal_to_evaluate_nll(base_file, tiny_extractor_file, tmp_path, cache,
                                                                  monkeypatch):
    """The sweep's bound in bits/dim is computed once per checkpoint whatever the cells, equals what
    `evaluate --nll` reports for the same checkpoint, images and seed, and pins its settings."""
    from dreamdata.evaluation import likelihood

    calls = []
    real = likelihood.nll_bits_per_dim
    monkeypatch.setattr(likelihood, "nll_bits_per_dim", lambda *a, **k: calls.append(1) or real(*a, **k))
    sweep_file = write_sweep(tmp_path, base_file, tiny_extractor_file, train_axes={},
                             arms=[{"name": "learned", "process": {"variance": "learned_range", "loss": "hybrid"}}],
                             sampling={"sampler": "ddpm"}, sampling_axes={"steps": [3, 5]}, metrics=["nll"],
                             evaluation={"n": 4, "ref_n": 8, "batch": 4, "fid_weights": str(tiny_extractor_file),
                                         "nll_n": 6, "nll_steps": 4})
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    lines = results_of(out)
    assert len(lines) == 2 and len(calls) == 1
    first, second = (line["metrics"]["nll"] for line in lines)
    assert first == second and first["n"] == 6 and first["nll_steps"] == 4 and first["estimate"] is True
    assert first["variance"] == "learned_range"
    parts = first["prior_bpd"] + first["kl_sum_bpd"] + first["decoder_bpd"]
    assert abs(parts - first["bits_per_dim"]) < 1e-9  # the total is the sum of its three terms
    assert "bits/dim" in (out / "summary.md").read_text()

    run = out / "arms" / "learned"
    separate = tmp_path / "evaluate-nll.json"
    assert main(["evaluate", str(run), "--nll", "--n", "6", "--nll-steps", "4", "--out", str(separate)]) == 0
    assert json.loads(separate.read_text())["bits_per_dim"] == pytest.approx(first["bits_per_dim"], rel=1e-6)

    changed = write_sweep(tmp_path, base_file, tiny_extractor_file, train_axes={},
                          arms=[{"name": "learned", "process": {"variance": "learned_range", "loss": "hybrid"}}],
                          sampling={"sampler": "ddpm"}, sampling_axes={"steps": [3, 5]}, metrics=["nll"],
                          evaluation={"n": 4, "ref_n": 8, "batch": 4, "fid_weights": str(tiny_extractor_file),
                                      "nll_n": 7, "nll_steps": 4})
    with pytest.raises(ConfigError, match="evaluation.nll_n"):
        run_sweep(load_sweep(changed), out)


def test_cell_interrupted_while_scored_is_not_sampled_again(base_file, tiny_extractor_file, tmp_path, cache,
                                                             monkeypatch):
    """Killed between sampling and its result, a cell keeps its N samples; the re-run scores those (the
    sampler is not called) and gives an uninterrupted run's result, then deletes them."""
    from dreamdata.evaluation import suite
    from dreamdata.sampling import generate as generate_module

    path = write_sweep(tmp_path, base_file, tiny_extractor_file, train_axes={}, sampling_axes={}, metrics=["fid"])
    run_sweep(load_sweep(path), tmp_path / "whole")
    real_evaluate = suite.evaluate_images

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "evaluate_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_sweep(path), tmp_path / "cut")
    cell_dir = tmp_path / "cut" / "cells" / "base" / "step-4" / "ddim-3steps-w0"
    assert (cell_dir / "samples-unscored.npz").is_file() and not (cell_dir / "result.json").exists()

    def no_sampling(*args, **kwargs):
        raise AssertionError("the kept samples should have been scored, not drawn again")

    monkeypatch.setattr(suite, "evaluate_images", real_evaluate)
    monkeypatch.setattr(generate_module, "generate", no_sampling)
    run_sweep(load_sweep(path), tmp_path / "cut")
    assert not (cell_dir / "samples-unscored.npz").exists()
    ignore = ("seconds", "samples_per_s", "checkpoint", "train_minutes")
    assert ([{k: v for k, v in r.items() if k not in ignore} for r in results_of(tmp_path / "whole")]
            == [{k: v for k, v in r.items() if k not in ignore} for r in results_of(tmp_path / "cut")])


def test_a_missing_fid_network_fails_before_any_training(base_file, tmp_path, cache, monkeypatch):
    """No fid_weights, no $DREAMDATA_FID_WEIGHTS and no torch-fidelity: the sweep stops before it trains."""
    import sys

    from dreamdata.errors import DreamdataError

    monkeypatch.delenv("DREAMDATA_FID_WEIGHTS", raising=False)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)  # import fails
    path = write_sweep(tmp_path, base_file, tmp_path / "unused.pt", train_axes={}, metrics=["fid"])
    tree = yaml.safe_load(path.read_text())
    del tree["evaluation"]["fid_weights"]
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(DreamdataError, match="no FID network"):
        run_sweep(load_sweep(path), tmp_path / "out")
    assert not list((tmp_path / "out").glob("arms/*/checkpoints/*.safetensors"))


def test_dry_run_marks_what_is_finished(base_file, tiny_extractor_file, tmp_path, cache, capsys):
    """After a run, every cell is [done] and nothing is left; a new guidance value leaves exactly its cells:
    N x steps x 2 (guided) per arm, counted by hand."""
    path = write_sweep(tmp_path, base_file, tiny_extractor_file, metrics=["fid"])
    out = tmp_path / "out"
    run_sweep(load_sweep(path), out)
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[done]") == 4 and printed.count("[trained]") == 2
    assert "left to run in this directory: 0 network evaluations" in printed
    assert main(["sweep", str(path), "--out", str(out), "--dry-run", "sampling_axes={guidance: [0.0, 1.0, 2.0]}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[done]") == 4
    assert f"left to run in this directory: {2 * 6 * 3 * 2} network evaluations" in printed


def test_dry_run_with_arm_lists_only_that_arm(base_file, tiny_extractor_file, tmp_path, cache, capsys):
    """``--dry-run --arm NAME`` plans the piece ``--arm NAME`` would run: one arm, its 2 guidance cells,
    nothing of the other arm; an unknown name is the same one-line error the run gives."""
    path = write_sweep(tmp_path, base_file, tiny_extractor_file, metrics=["fid"])
    out = tmp_path / "out"
    arms = [arm.name for arm in resolve_arms(load_sweep(path), out)]
    assert len(arms) == 2
    assert main(["sweep", str(path), "--out", str(out), "--dry-run", "--arm", arms[1]]) == 0
    printed = capsys.readouterr().out
    assert f"arm {arms[1]} (" in printed and f"arm {arms[0]} (" not in printed
    assert "total: 1 arms, 2 cells" in printed
    assert main(["sweep", str(path), "--out", str(out), "--dry-run", "--arm", "no-such-arm"]) == 2
    assert "--arm no-such-arm: the sweep has no such arm" in capsys.readouterr().err
