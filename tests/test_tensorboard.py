"""`train.tensorboard=true`: event files with the logged scalars and the sample grid, read back with
tensorboard's own event reader; and a one-line ConfigError naming the extra when the package is missing."""

from __future__ import annotations

import builtins
import json

import pytest

from dreamdata.config import load_config
from dreamdata.errors import ConfigError
from dreamdata.training.tensorboard import TensorBoardLogger
from dreamdata.training.trainer import Trainer, train


def test_missing_tensorboard_is_a_config_error_at_construction(tiny_overrides, monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError) as raised:
        Trainer(load_config("tiny", [*tiny_overrides, "train.tensorboard=true"]))
    assert str(raised.value) == ("train.tensorboard=true needs the tensorboard package: "
                                 "pip install 'dreamdata[tensorboard]'")
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made
    Trainer(load_config("tiny", tiny_overrides)).close()  # off by default: no tensorboard needed


def read_events(log_dir):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


@pytest.mark.slow
def test_event_files_hold_the_logged_scalars_and_the_grid(tiny_overrides):
    pytest.importorskip("tensorboard")
    result = train(load_config("tiny", [*tiny_overrides, "train.tensorboard=true", "train.steps=6",
                                        "train.log_every=2", "train.val_every=2", "train.sample_steps=2"]))
    events = read_events(result.run_dir / "tensorboard")
    tags = events.Tags()
    for tag in ("train/loss", "held_out/val_loss", "held_out/val_loss_ema", "train/lr", "train/img_per_s"):
        assert tag in tags["scalars"], tag
    assert "samples/grid" in tags["images"]
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == [r["step"] for r in logged]
    assert [e.value for e in scalars] == pytest.approx([r["loss"] for r in logged], rel=1e-6)  # float32 events
    assert events.Images("samples/grid")[0].step == 6


def test_evaluation_metrics_get_their_own_tags(tmp_path):
    pytest.importorskip("tensorboard")
    logger = TensorBoardLogger(tmp_path)
    logger.log_record({"step": 3, "eval_fid": 12.5, "eval_n": 12, "skipped": True, "loss_generator": None})
    logger.close()
    events = read_events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("eval/fid")] == [(3, 12.5)]
    assert "eval/n" in events.Tags()["scalars"] and "train/skipped" not in events.Tags()["scalars"]
