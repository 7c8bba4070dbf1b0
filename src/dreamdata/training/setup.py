"""Pieces a training run is assembled from: device, precision, optimizer, learning-rate schedule."""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch

from dreamdata.config import TrainConfig
from dreamdata.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (this rank's GPU under torchrun), then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key train.device: {name!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key train.device: {name!r} asked for, but CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast on CUDA when asked (or by default); full fp32 elsewhere."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    betas = (config.adam_betas[0], config.adam_betas[1])
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.lr, betas=betas, weight_decay=config.weight_decay)


def lr_multiplier(step: int, warmup_steps: int, schedule: str, total_steps: Optional[int]) -> float:
    """Linear warm-up to the base LR over ``warmup_steps``, then constant or cosine decay to zero."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine" and total_steps:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def total_steps_for_budget(config: TrainConfig, steps_per_epoch: int) -> Optional[int]:
    """Step budget from ``steps`` or ``epochs``; None for a wall-clock (``minutes``) budget."""
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * steps_per_epoch))
    return None


def capture_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
