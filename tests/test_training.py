"""The training loop: loss falls, resume is exact, checkpoints round-trip, files are written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import torchrun_train
from dreamdata.cli import main
from dreamdata.config import load_config
from dreamdata.errors import CheckpointError
from dreamdata.training import checkpoint as ckpt
from dreamdata.training.ema import EMA
from dreamdata.training.pretrained import load_trained
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.setup import lr_multiplier
from dreamdata.training.trainer import train


def losses_of(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


@pytest.mark.slow
def test_tiny_run_learns_and_writes_a_complete_run_directory(tiny_overrides):
    config = load_config("tiny", tiny_overrides + ["train.steps=60", "train.checkpoint_every=0"])
    result = train(config)
    run_dir = result.run_dir
    for name in ("config.yaml", "version.json", "data.json", "metrics.jsonl", "checkpoints/latest.json"):
        assert (run_dir / name).is_file(), name
    version = json.loads((run_dir / "version.json").read_text())
    assert {"git_commit", "git_dirty", "torch", "dreamdata"} <= set(version)
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(5, 61, 5))
    assert all({"loss", "lr", "img_per_s", "epoch"} <= set(r) for r in records)
    assert any("val_loss" in r for r in records)
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    grids = list((run_dir / "samples").glob("grid-*.png"))
    assert len(grids) == 1
    # nothing half-written is left behind
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def test_resumed_run_matches_uninterrupted_run(tiny_overrides, tmp_path):
    overrides = tiny_overrides + ["train.steps=20", "train.sample_grid=false", "train.log_every=3",
                                  "train.checkpoint_every=0"]
    uninterrupted = train(load_config("tiny", overrides))
    interrupted = train(load_config("tiny", overrides), stop_at_step=8)
    assert read_metrics(interrupted.run_dir)[-1]["step"] == 6
    resumed = train(load_config("tiny", overrides), resume=interrupted.run_dir)
    assert resumed.step == 20
    assert losses_of(resumed.run_dir) == losses_of(uninterrupted.run_dir)
    a = ckpt.load_weights(ckpt.latest_checkpoint(uninterrupted.run_dir))
    b = ckpt.load_weights(ckpt.latest_checkpoint(resumed.run_dir))
    for name in a.ema:
        assert torch.equal(a.ema[name], b.ema[name]), name


def test_resume_drops_metrics_logged_after_the_checkpoint(tiny_overrides):
    overrides = tiny_overrides + ["train.steps=12", "train.sample_grid=false", "train.log_every=2",
                                  "train.checkpoint_every=4"]
    run = train(load_config("tiny", overrides), stop_at_step=12)
    run_dir = run.run_dir
    # simulate a crash after step 10 that lost the final checkpoint: point latest at step 8
    (run_dir / "checkpoints" / "latest.json").write_text(json.dumps({"step": 8, "name": "step-000000008"}))
    train(load_config("tiny", overrides), resume=run_dir)
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == sorted(set(steps)) == [2, 4, 6, 8, 10, 12]


def test_checkpoint_round_trip(tiny_overrides):
    run = train(load_config("tiny", tiny_overrides + ["train.steps=5", "train.sample_grid=false"]))
    model = load_trained(run.run_dir)
    weights = ckpt.load_weights(ckpt.latest_checkpoint(run.run_dir))
    assert model.step == 5 and model.class_names == ["hstripes", "vstripes", "square"]
    for name, tensor in model.network.state_dict().items():
        assert torch.equal(tensor, weights.ema[name])
    raw = load_trained(run.run_dir, use_ema=False)
    assert any(not torch.equal(raw.network.state_dict()[k], model.network.state_dict()[k])
               for k in weights.model)


def test_corrupt_checkpoint_and_missing_run_give_clear_errors(tmp_path):
    bad = tmp_path / "checkpoints" / "step-000000001.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="step-000000001.safetensors"):
        ckpt.load_weights(bad)
    with pytest.raises(CheckpointError, match="no such run directory"):
        load_trained(tmp_path / "nope")
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2


def test_ema_update_follows_its_formula():
    module = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.constant_(module.weight, 1.0)
    ema = EMA(module, decay=0.9, warmup=False)
    torch.nn.init.constant_(module.weight, 3.0)
    ema.update(module)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))
    warm = EMA(module, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(1 / 10)


def test_lr_warmup_then_cosine():
    assert lr_multiplier(0, 10, "constant", None) == pytest.approx(0.1)
    assert lr_multiplier(9, 10, "constant", None) == pytest.approx(1.0)
    assert lr_multiplier(50, 10, "constant", 100) == 1.0
    assert lr_multiplier(10, 10, "cosine", 110) == pytest.approx(1.0)
    assert lr_multiplier(60, 10, "cosine", 110) == pytest.approx(0.5)
    assert lr_multiplier(110, 10, "cosine", 110) == pytest.approx(0.0)


def test_cli_train_then_sample(tiny_overrides, tmp_path, capsys):
    assert main(["train", "tiny", *tiny_overrides, "train.steps=5", "train.sample_grid=false"]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    out = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "5", "--out", str(out), "--device", "cpu"]) == 0
    from PIL import Image
    width, height = Image.open(out).size
    assert height > width  # 3 rows (classes) of 2 samples


def test_minutes_budget_stops(tiny_overrides):
    config = load_config("tiny", tiny_overrides + ["train.steps=null", "train.minutes=0.002",
                                                   "train.sample_grid=false"])
    result = train(config)
    assert 1 <= result.step < 10_000


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_resume_exactly(tiny_overrides, tmp_path):
    """torchrun with 2 processes on gloo: rank 0 alone writes, replicas stay identical (checked at the
    end of every run), and a resumed DDP run continues every rank's stream exactly."""
    common = [*tiny_overrides, "train.sample_grid=false", "train.num_threads=1", "train.log_every=5"]
    torchrun_train(["tiny", *common, "train.steps=10", f"--run-dir={tmp_path / 'whole'}"])
    torchrun_train(["tiny", *common, "train.steps=5", f"--run-dir={tmp_path / 'parts'}"])
    torchrun_train(["--resume", str(tmp_path / "parts"), "train.steps=10"])
    assert "steps: 10" in (tmp_path / "parts" / "config.yaml").read_text()  # the resumed budget is recorded
    assert not (tmp_path / "runs").exists()  # nothing besides the two run directories was written
    whole, parts = losses_of(tmp_path / "whole"), losses_of(tmp_path / "parts")
    assert [step for step, _ in whole] == [5, 10]
    assert parts == whole
    state = ckpt.load_training_state(ckpt.latest_checkpoint(tmp_path / "parts"))
    assert state["world_size"] == 2 and state["step"] == 10 and len(state["per_rank"]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_run_on_cuda_with_bf16_autocast(tiny_overrides):
    config = load_config("tiny", tiny_overrides + ["train.device=cuda", "train.precision=bf16",
                                                   "train.channels_last=true", "train.steps=20"])
    result = train(config)
    records = read_metrics(result.run_dir)
    assert records[-1]["loss"] < records[0]["loss"]
    assert list((result.run_dir / "samples").glob("grid-*.png"))
