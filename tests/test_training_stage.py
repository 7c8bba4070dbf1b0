"""A training stage of an experiment (a study's generator, a sweep's arm): finished runs are taken as they
are, and a finished run asked for more steps is continued to exactly the run trained that long at once."""

from __future__ import annotations

import json
import math

import torch

from dreamdata.config import load_config
from dreamdata.experiments.training_stage import stage_finished, train_stage
from dreamdata.training import checkpoint as ckpt
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.trainer import train

DONE = "stage-done.json"


def _config(tiny_overrides, steps: int, *extra: str):
    return load_config("tiny", tiny_overrides + [f"train.steps={steps}", "train.sample_grid=false",
                                                 "train.log_every=3", "train.checkpoint_every=0", *extra])


def test_a_finished_stage_asked_for_more_steps_continues_to_the_longer_run(tiny_overrides, tmp_path):
    logs: list[str] = []
    stage = tmp_path / "stage"
    assert train_stage(_config(tiny_overrides, 9), stage, DONE, logs.append, "stage")
    assert json.loads((stage / DONE).read_text()) == {"step": 9}
    assert stage_finished(_config(tiny_overrides, 9), stage, DONE)
    assert not stage_finished(_config(tiny_overrides, 18), stage, DONE)

    # asked for 18 steps: resumed from step 9, not taken as finished
    assert train_stage(_config(tiny_overrides, 18), stage, DONE, logs.append, "stage")
    assert "resuming" in logs[-1] and not any("lr_schedule cosine" in line for line in logs)
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


def test_a_cosine_stage_continued_says_it_is_not_the_longer_run(tiny_overrides, tmp_path):
    """Under a cosine decay the first run's learning rate reached zero at its own budget; continued, the rate
    jumps to the longer decay's value, so the losses part from a run trained that long at once, and the log
    says so."""
    cosine = ("train.lr_schedule=cosine", "train.warmup_steps=0", "train.log_every=1")
    logs: list[str] = []
    stage = tmp_path / "stage"
    assert train_stage(_config(tiny_overrides, 6, *cosine), stage, DONE, logs.append, "stage")
    assert not any("lr_schedule cosine" in line for line in logs)
    assert train_stage(_config(tiny_overrides, 12, *cosine), stage, DONE, logs.append, "stage")
    note = [line for line in logs if "lr_schedule cosine" in line]
    assert len(note) == 1 and "finished at 6 steps to 12" in note[0]

    at_once = train(_config(tiny_overrides, 12, *cosine), run_dir=tmp_path / "at-once")
    rates = lambda run: {r["step"]: r["lr"] for r in read_metrics(run)}  # noqa: E731
    losses = lambda run: {r["step"]: r["loss"] for r in read_metrics(run)}  # noqa: E731
    continued, once = rates(stage), rates(at_once.run_dir)
    # Loshchilov & Hutter's cosine decay, lr_s = lr (1 + cos(pi s / S)) / 2 after s of S steps: at step 6 the
    # 6-step run is at 0 and the 12-step run at lr / 2; from step 7 on both follow the 12-step decay
    base = _config(tiny_overrides, 12, *cosine).train.lr
    assert abs(continued[6]) < 1e-12 and abs(once[6] - base / 2) < 1e-9 * base
    expected_9 = base * (1 + math.cos(math.pi * 9 / 12)) / 2
    assert abs(continued[9] - expected_9) < 1e-9 * base and abs(once[9] - expected_9) < 1e-9 * base
    assert losses(stage)[12] != losses(at_once.run_dir)[12]  # trained under other rates before step 6
