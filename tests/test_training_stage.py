"""A training stage of an experiment (a study's generator, a sweep's arm): finished runs are taken as they
are, and a finished run asked for more steps is continued to exactly the run trained that long at once."""

from __future__ import annotations

import json

import torch

from dreamdata.config import load_config
from dreamdata.experiments.training_stage import stage_finished, train_stage
from dreamdata.training import checkpoint as ckpt
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.trainer import train

DONE = "stage-done.json"


def _config(tiny_overrides, steps: int):
    return load_config("tiny", tiny_overrides + [f"train.steps={steps}", "train.sample_grid=false",
                                                 "train.log_every=3", "train.checkpoint_every=0"])


def test_a_finished_stage_asked_for_more_steps_continues_to_the_longer_run(tiny_overrides, tmp_path):
    logs: list[str] = []
    stage = tmp_path / "stage"
    assert train_stage(_config(tiny_overrides, 9), stage, DONE, logs.append, "stage")
    assert json.loads((stage / DONE).read_text()) == {"step": 9}
    assert stage_finished(_config(tiny_overrides, 9), stage, DONE)
    assert not stage_finished(_config(tiny_overrides, 18), stage, DONE)

    # asked for 18 steps: resumed from step 9, not taken as finished
    assert train_stage(_config(tiny_overrides, 18), stage, DONE, logs.append, "stage")
    assert "resuming" in logs[-1]
    assert json.loads((stage / DONE).read_text()) == {"step": 18}

    # the independent answer: the same config trained for 18 steps in one go
    at_once = train(_config(tiny_overrides, 18), run_dir=tmp_path / "at-once")
    losses = lambda run: [(r["step"], r["loss"]) for r in read_metrics(run)]  # noqa: E731
    assert losses(stage) == losses(at_once.run_dir)
    a = ckpt.load_weights(ckpt.latest_checkpoint(stage))
    b = ckpt.load_weights(ckpt.latest_checkpoint(at_once.run_dir))
    assert all(torch.equal(a.ema[name], b.ema[name]) for name in a.ema)

    # a smaller budget than the run reached is finished: nothing trains, nothing is logged
    before = len(logs)
    assert train_stage(_config(tiny_overrides, 9), stage, DONE, logs.append, "stage")
    assert len(logs) == before and json.loads((stage / DONE).read_text()) == {"step": 18}


def test_a_minutes_budget_is_finished_by_its_marker(tiny_overrides, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / DONE).write_text('{"step": 4}\n')
    minutes = load_config("tiny", tiny_overrides + ["train.steps=null", "train.minutes=5"])
    assert stage_finished(minutes, stage, DONE)
    assert not stage_finished(minutes, tmp_path / "elsewhere", DONE)
