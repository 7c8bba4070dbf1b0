"""``dreamdata sweep --dry-run``: the arms and cells a sweep would run, with what each costs.

Cost is counted in network evaluations (one forward pass of one image; a guided step costs two, the
conditional and the unconditional half) and turned into CPU minutes at a rate measured here and now: a
few timed forward passes of each arm's network on a batch. Training costs about three forward passes per
image (forward plus backward). Inception features and the metrics' own passes are not counted.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from dreamdata.experiments.cells import Arm, resolve_sampling
from dreamdata.experiments.sweep_config import SweepConfig

__all__ = ["estimate_sweep"]

TRAIN_PASSES_PER_IMAGE = 3.0  # forward + backward, measured ~3x a forward pass on these UNets


def _network_and_rate(arm: Arm, data_cache: dict, batch: int = 32, repeats: int = 2) -> tuple[Any, float, int]:
    """The arm's data (channels, size, classes, train size) and its network's forward rate in images/s."""
    from dreamdata.data import load_dataset
    from dreamdata.training.objectives import build_networks

    key = repr(arm.config.data)
    if key not in data_cache:
        data = load_dataset(arm.config.data, "train")
        data_cache[key] = (int(data.images.shape[1]), int(data.images.shape[-1]), len(data.class_names), len(data))
    channels, size, classes, count = data_cache[key]
    network = build_networks(arm.config, channels, size, classes if arm.config.model.class_conditional else 0)
    network.eval()
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
    return data_cache[key], batch * repeats / max(seconds, 1e-9), count


def estimate_sweep(sweep: SweepConfig, arms: list[Arm]) -> dict[str, Any]:
    """Per arm: training images and minutes, checkpoints scored, cells with network evaluations and minutes."""
    from dreamdata.process import build_process
    from dreamdata.sampling.from_run import run_distilled_sampler
    from dreamdata.sampling.generate import network_evaluations_per_sample

    data_cache: dict = {}
    report: dict[str, Any] = {"arms": [], "total_network_evaluations": 0, "total_cpu_minutes": 0.0}
    for arm in arms:
        (_, _, classes, count), rate, _ = _network_and_rate(arm, data_cache)
        tc = arm.config.train
        steps_per_epoch = max(1, -(-count // tc.batch_size))
        total_steps = tc.steps if tc.steps is not None else (
            round(tc.epochs * steps_per_epoch) if tc.epochs is not None else None)
        train_minutes = 0.0 if arm.external else (
            tc.minutes if total_steps is None else total_steps * tc.batch_size * TRAIN_PASSES_PER_IMAGE / rate / 60)
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
                                                        sampling.get("guidance_interval"))  # 2 per guided step
            evaluations = sweep.evaluation.n * per_sample * checkpoints
            cells.append({"sampling": sampling, "checkpoints": checkpoints, "network_evaluations": evaluations,
                          "cpu_minutes": round(evaluations / rate / 60, 1)})
        arm_evaluations = sum(c["network_evaluations"] for c in cells)
        arm_minutes = train_minutes + sum(c["cpu_minutes"] for c in cells)
        report["arms"].append({
            "arm": arm.name, "axes": arm.axes, "run_dir": str(arm.run_dir), "train_steps": total_steps,
            "train_minutes": round(train_minutes, 1), "forward_images_per_s": round(rate, 1), "cells": cells,
            "minutes": round(arm_minutes, 1)})
        report["total_network_evaluations"] += arm_evaluations
        report["total_cpu_minutes"] += arm_minutes
    report["total_cpu_minutes"] = round(report["total_cpu_minutes"], 1)
    report["total_cells"] = sum(c["checkpoints"] for a in report["arms"] for c in a["cells"])
    return report
