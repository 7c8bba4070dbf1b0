"""What the training loop measures and records besides the step itself: the held-out loss, and the metrics
records (``metrics.jsonl`` and TensorBoard) with the one-line summary of a sample-quality evaluation.

The held-out loss uses a generator of its own, seeded from ``train.seed``, never torch's global RNG: the
loss is comparable across steps (same images, same noise) and measuring it does not change the training
run, so a resumed run still continues exactly (see :mod:`dreamdata.training.trainer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from dreamdata.config import TrainConfig
from dreamdata.data import ImageData
from dreamdata.training import run_dir as rd
from dreamdata.training.tensorboard import TensorBoardLogger

__all__ = ["evaluation_summary", "record_metrics", "validation_loss", "validation_losses"]

VALIDATION_SEED_OFFSET = 12345
"""The held-out loss's generator is seeded with ``train.seed + VALIDATION_SEED_OFFSET``."""


@torch.no_grad()
def validation_loss(objective, network, val: ImageData, batch_size: int, batches: int, device: torch.device,
                    seed: int) -> Optional[float]:
    """Mean held-out loss of ``network`` under ``objective`` on the first ``batches`` held-out batches, with
    fixed noise (comparable across steps)."""
    if len(val) == 0:
        return None
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = network.training
    network.eval()
    total, count = 0.0, 0
    for start in range(0, min(len(val), batch_size * batches), batch_size):
        images = val.images[start:start + batch_size].to(device).float().div(127.5).sub(1.0)
        labels = val.labels[start:start + batch_size].to(device)
        losses = objective.validation_losses(network, images, labels, generator)
        total += float(losses.float().sum())
        count += images.shape[0]
    network.train(was_training)
    return total / count


def validation_losses(objective, val: ImageData, tc: TrainConfig, device: torch.device) -> dict[str, float]:
    """:func:`validation_loss` of each of the objective's validation networks, by metric name (e.g.
    ``val_loss`` and ``val_loss_ema``); empty without held-out images."""
    seed = tc.seed + VALIDATION_SEED_OFFSET
    result = {}
    for key, network in objective.validation_networks().items():
        value = validation_loss(objective, network, val, tc.batch_size, tc.val_batches, device, seed)
        if value is not None:
            result[key] = value
    return result


def record_metrics(record: dict[str, Any], run_dir: Optional[Path], tensorboard: Optional[TensorBoardLogger]
                   ) -> None:
    """Append ``record`` to ``run_dir``'s ``metrics.jsonl`` and to TensorBoard (each when given)."""
    if run_dir is not None:
        rd.log_metrics(run_dir, record)
    if tensorboard is not None:
        tensorboard.log_record(record)


def evaluation_summary(record: dict[str, Any]) -> str:
    """One line for the console: an evaluation record's ``eval_*`` metrics, its sample count and seconds."""
    shown = ", ".join(f"{key[5:]} {value:.4g}" for key, value in record.items()
                      if key.startswith("eval_") and key not in ("eval_n", "eval_seconds"))
    return f"{shown} (N={record['eval_n']}, {record['eval_seconds']:.0f} s)"
