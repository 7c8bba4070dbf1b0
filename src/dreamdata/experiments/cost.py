"""``dreamdata sweep --dry-run``: the arms and cells a sweep would run, with what each costs.

Cost is counted in network evaluations (one forward pass of one image; a guided step costs two, the
conditional and the unconditional half) and turned into CPU minutes at rates measured here and now: a few
timed forward passes of each arm's network on a batch for sampling (in each precision its cells sample in:
a bf16 cell at the bf16 rate), and a few timed optimiser steps of the
arm's own training objective (its batch size, loss, EMA; for a GAN the discriminator and generator steps
with DiffAugment) for training. Both are measured on the spot, so they read low when the CPU is busy with
another job. An arm already trained in the sweep's directory is not timed for training: its minutes are the
wall-clock time its run logged, and its data shape comes from its ``data.json``. ``torch.compile`` is not timed
(its first steps compile). Inception features and the metrics' own passes are not counted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch

from dreamdata.errors import ConfigError
from dreamdata.experiments.cells import Arm, checkpoint_steps, make_cell, resolve_sampling, select_checkpoints
from dreamdata.experiments.sweep_config import SweepConfig

__all__ = ["estimate_sweep"]


def _data_shape(arm: Arm, data_cache: dict, trained: bool) -> tuple[int, int, int, int]:
    """The arm's data as (channels, size, classes, train size): from the run's ``data.json`` when it is trained
    (a trained arm's dry run loads no dataset), else from the dataset itself (once per distinct data config)."""
    from dreamdata.data import load_dataset
    from dreamdata.training.run_dir import DATA_FILE, read_data_info

    if trained and (arm.run_dir / DATA_FILE).is_file():
        info = read_data_info(arm.run_dir)
        return int(info["channels"]), int(info["image_size"]), len(info["class_names"]), int(info["num_train"])
    key = repr(arm.config.data)
    if key not in data_cache:
        data = load_dataset(arm.config.data, "train")
        data_cache[key] = (int(data.images.shape[1]), int(data.images.shape[-1]), len(data.class_names), len(data))
    return data_cache[key]


def _forward_rate(arm: Arm, channels: int, size: int, classes: int, precision: str = "fp32", batch: int = 32,
                  repeats: int = 2) -> float:
    """The arm's network's forward rate in images/s, in the sampling ``precision``: a few timed passes on a
    batch of noise."""
    from dreamdata.sampling.precision import in_precision
    from dreamdata.training.objectives import build_networks

    module = build_networks(arm.config, channels, size, classes if arm.config.model.class_conditional else 0)
    module.eval()
    network = in_precision(module, precision)
    y = torch.zeros(batch, dtype=torch.long) if arm.config.model.class_conditional else None
    if arm.config.process.kind == "gan":  # one pass of G then D: what a GAN's sample and training cost
        z = torch.randn(batch, arm.config.model.latent_dim)

        def forward():
            network.discriminator(network.generator(z, y), y)
    else:
        x = torch.randn(batch, channels, size, size)
        t = torch.zeros(batch, dtype=torch.long)

        def forward():
            network(x, t, y)
    with torch.inference_mode():
        forward()  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            forward()
        seconds = time.perf_counter() - started
    return batch * repeats / max(seconds, 1e-9)


def _minutes_trained(arm: Arm) -> Optional[float]:
    """Wall-clock minutes the trained arm's run logged (its last ``elapsed_s``), or None if it logged none."""
    from dreamdata.training.run_dir import read_metrics

    elapsed = [r["elapsed_s"] for r in read_metrics(arm.run_dir) if r.get("elapsed_s") is not None]
    return elapsed[-1] / 60 if elapsed else None


def _training_rate(arm: Arm, channels: int, size: int, classes: int, repeats: int = 2) -> float:
    """Training images/s of the arm's objective: timed optimiser steps on random images of its batch size.

    A step is what the trainer runs (:meth:`~dreamdata.training.objectives.DiffusionObjective.step` or the
    GAN's discriminator-then-generator step), so the estimate needs no passes-per-image guess: a GAN step
    costs several generator and discriminator passes, a hybrid loss more than ``L_simple``.
    """
    import dataclasses

    from dreamdata.process import build_process
    from dreamdata.training.objectives import build_networks, build_objective

    config = dataclasses.replace(arm.config, train=dataclasses.replace(arm.config.train, compile=False))
    conditional = config.model.class_conditional
    network = build_networks(config, channels, size, classes if conditional else 0)
    objective = build_objective(config, network, build_process(config.process), torch.device("cpu"),
                                distributed=False, total_steps=None)
    batch = config.train.batch_size
    images = torch.rand(batch, channels, size, size) * 2 - 1
    labels = torch.randint(0, max(classes, 1), (batch,)) if conditional else torch.zeros(batch, dtype=torch.long)
    objective.step(images, labels, lambda *_: True)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        objective.step(images, labels, lambda *_: True)
    seconds = time.perf_counter() - started
    return batch * repeats / max(seconds, 1e-9)


def estimate_sweep(sweep: SweepConfig, arms: list[Arm], out_dir: Optional[Path] = None) -> dict[str, Any]:
    """Per arm: training images and minutes, checkpoints scored, cells with network evaluations and minutes.

    With ``out_dir`` (the sweep's directory), what is finished there is marked: a trained arm (``trained``)
    costs no training, a cell counts the checkpoints it has a result for (``done``), and ``left_*`` totals
    what a re-run would still do.

    The networks it builds and times draw from torch's global RNG; it is restored, so a dry run changes
    nothing a later seeded call would see.
    """
    with torch.random.fork_rng(devices=[]):
        return _estimate(sweep, arms, out_dir)


def _finished_checkpoints(out_dir: Path, arm: Arm, available: list[int], wanted: list[Any],
                          sampling: dict[str, Any]) -> int:
    """How many of the cell's checkpoints (of the trained arm's ``available`` ones) have a ``result.json``."""
    from dreamdata.experiments.runner import RESULT_FILE

    try:
        steps = select_checkpoints(wanted, available, arm.name)
    except ConfigError:
        return 0
    return sum((out_dir / "cells" / make_cell(arm.name, step, sampling).key / RESULT_FILE).is_file()
               for step in steps)


def _estimate(sweep: SweepConfig, arms: list[Arm], out_dir: Optional[Path]) -> dict[str, Any]:
    from dreamdata.process import build_process
    from dreamdata.sampling.from_run import run_distilled_sampler
    from dreamdata.sampling.generate import network_evaluations_per_sample

    from dreamdata.experiments.runner import arm_trained

    data_cache: dict = {}
    report: dict[str, Any] = {"arms": [], "total_network_evaluations": 0, "total_cpu_minutes": 0.0,
                              "left_network_evaluations": 0, "left_cpu_minutes": 0.0}
    for arm in arms:
        trained = out_dir is not None and arm_trained(arm)
        available = checkpoint_steps(arm.run_dir) if trained else []  # once per arm, not per cell
        channels, size, classes, count = _data_shape(arm, data_cache, trained)
        rates: dict[str, float] = {}  # images/s per sampling precision, timed when a cell first needs it

        def rate_of(precision: str) -> float:
            if precision not in rates:
                rates[precision] = _forward_rate(arm, channels, size, classes, precision)
            return rates[precision]

        rate = rate_of("fp32")
        tc = arm.config.train
        steps_per_epoch = max(1, -(-count // tc.batch_size))
        total_steps = tc.steps if tc.steps is not None else (
            round(tc.epochs * steps_per_epoch) if tc.epochs is not None else None)
        spent = _minutes_trained(arm) if trained and not arm.external else None
        train_rate = None if arm.external or total_steps is None or spent is not None else _training_rate(
            arm, channels, size, classes)  # a trained arm's minutes are the ones its run logged, not timed again
        train_minutes = 0.0 if arm.external else spent if spent is not None else (
            tc.minutes if total_steps is None else total_steps * tc.batch_size / train_rate / 60)
        process = build_process(arm.config.process)
        conditional = arm.config.model.class_conditional
        distilled = run_distilled_sampler(arm.run_dir) if arm.external else None
        cells = []
        for settings in sweep.cells:
            wanted = settings.get("checkpoints", sweep.checkpoints)
            if "all" in wanted and total_steps is not None and tc.checkpoint_every:
                checkpoints = total_steps // tc.checkpoint_every + (total_steps % tc.checkpoint_every > 0)
            else:
                checkpoints = len(set(wanted))
            sampling = resolve_sampling(settings, arm.config.process.kind, process.num_steps, process, conditional,
                                        distilled)
            if any(c["sampling"] == sampling for c in cells):  # e.g. guidance values of an unconditional arm
                continue
            guidance = float(sampling["guidance"]) if conditional else 0.0
            per_sample = network_evaluations_per_sample(process, sampling["steps"], sampling["spacing"], guidance,
                                                        sampling.get("guidance_interval"),  # 2 per guided step
                                                        autoguided=bool(sampling.get("autoguide")))
            evaluations = sweep.evaluation.n * per_sample * checkpoints
            done = 0 if not available else min(
                checkpoints, _finished_checkpoints(out_dir, arm, available, wanted, sampling))
            cell_rate = rate_of(sampling.get("precision") or "fp32")
            left = evaluations * (checkpoints - done) // max(1, checkpoints)
            cells.append({"sampling": sampling, "checkpoints": checkpoints, "network_evaluations": evaluations,
                          "cpu_minutes": round(evaluations / cell_rate / 60, 1), "done": done,
                          "left_network_evaluations": left, "left_cpu_minutes": left / cell_rate / 60})
        arm_evaluations = sum(c["network_evaluations"] for c in cells)
        arm_minutes = train_minutes + sum(c["cpu_minutes"] for c in cells)
        left_evaluations = sum(c["left_network_evaluations"] for c in cells)
        left_minutes = sum(c.pop("left_cpu_minutes") for c in cells)
        report["arms"].append({
            "arm": arm.name, "axes": arm.axes, "run_dir": str(arm.run_dir), "train_steps": total_steps,
            "train_minutes": round(train_minutes, 1), "forward_images_per_s": round(rate, 1),
            "forward_images_per_s_by_precision": {p: round(r, 1) for p, r in rates.items()},
            "train_images_per_s": None if train_rate is None else round(train_rate, 1), "cells": cells,
            "minutes": round(arm_minutes, 1), "trained": trained, "train_minutes_logged": spent is not None})
        report["total_network_evaluations"] += arm_evaluations
        report["total_cpu_minutes"] += arm_minutes
        report["left_network_evaluations"] += left_evaluations
        report["left_cpu_minutes"] += (0.0 if trained else train_minutes) + left_minutes
    report["total_cpu_minutes"] = round(report["total_cpu_minutes"], 1)
    report["left_cpu_minutes"] = round(report["left_cpu_minutes"], 1)
    report["total_cells"] = sum(c["checkpoints"] for a in report["arms"] for c in a["cells"])
    return report
