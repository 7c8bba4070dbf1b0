"""Fast classifier training in the spirit of airbench: resident data, batched augmentation, fixed budget.

The whole training set lives on the device as one uint8 tensor; each step takes a batch by index from a
seeded per-epoch permutation, converts it to float, and augments it as one tensor operation (random
horizontal flip; random translation by up to ``crop_padding`` pixels, i.e. zero-pad and crop back to
size, as in the CIFAR recipe of He et al. 2016). No DataLoader, no worker processes.

The budget is a fixed number of optimiser steps (``steps`` batches of ``batch_size``), whatever the
size of the training set: that is what makes the arms of a study comparable - a real-only arm and a
real+synthetic arm see exactly as many images and gradient updates, so any difference in accuracy comes
from *which* images they see, not from how long they train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dreamdata.classify.networks import build_classifier
from dreamdata.training.setup import autocast_context


@dataclass
class ClassifierConfig:
    """How a classifier is trained. Every arm of a study uses the same one (same budget)."""

    network: str = "small_cnn"  # small_cnn | resnet18
    steps: int = 500  # optimiser steps: the budget, identical for every arm
    batch_size: int = 128
    lr: float = 2e-3  # peak learning rate of AdamW
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of the steps, then linear decay to 0
    label_smoothing: float = 0.0
    # random horizontal flip; None = the dataset's default, resolved by the caller that knows the dataset
    # (dreamdata.data.resolve_hflip: on for fashion-mnist/cifar, off for mnist and files); unresolved = off
    hflip: Optional[bool] = None
    crop_padding: int = 2  # random translation by up to this many pixels (0 = none)
    eval_batch_size: int = 1000


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float in ``[-1, 1]`` (the same scaling the diffusion models use)."""
    return images.float().div(127.5).sub(1.0)


def augment_batch(images: torch.Tensor, hflip: bool, crop_padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random flip and translation of a float batch ``[B, C, H, W]``, as whole-batch tensor operations.

    Each image is flipped with probability 1/2 and shifted by ``(dy, dx)`` drawn uniformly from
    ``-crop_padding..crop_padding``; pixels shifted in from outside are zero (mid-gray in ``[-1, 1]``).
    """
    batch, _, height, width = images.shape
    device = images.device
    if hflip:
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(images, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (batch,), generator=generator, device=device)
        dx = torch.randint(0, 2 * p + 1, (batch,), generator=generator, device=device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, :, None]  # [B, H, 1]
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, :]  # [B, 1, W]
        batch_index = torch.arange(batch, device=device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch_index, rows, cols].permute(0, 3, 1, 2)  # [B, C, H, W]
    return images.contiguous()


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up to 1 over the first ``warmup_fraction`` of ``total`` steps, then linear decay to 0."""
    warmup = max(1, math.ceil(warmup_fraction * total))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, config: ClassifierConfig,
                     seed: int, device: torch.device | str = "cpu", initial: nn.Module | None = None,
                     progress: Optional[str] = None) -> nn.Module:
    """Train a classifier on uint8 ``images [N, C, H, W]`` and ``labels [N]``; returns it in eval mode.

    ``seed`` fixes the initial weights, the batch order and the augmentation, so one seed is one
    reproducible training run. ``initial`` (a network of the same architecture, left unchanged) replaces the
    seeded initial weights: fine-tuning, e.g. on real images after pre-training on dreamed ones, with a fresh
    optimiser and the same warm-up and decay over ``config.steps``. ``progress`` labels a progress bar over the
    steps on stderr (a long budget runs for minutes on a CPU); ``None`` shows none. It changes nothing trained.
    """
    if len(images) == 0:
        raise ValueError("train_classifier: the training set is empty")
    device = torch.device(device)
    torch.manual_seed(seed)
    network = build_classifier(config.network, int(images.shape[1]), num_classes).to(device)
    if initial is not None:
        network.load_state_dict(initial.state_dict())
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.steps, config.warmup_fraction))
    resident_images = images.to(device)
    resident_labels = labels.to(device=device, dtype=torch.long)
    generator = torch.Generator(device=device).manual_seed(seed)
    count = len(resident_images)
    batch_size = min(config.batch_size, count)
    order = torch.randperm(count, generator=generator, device=device)
    position = 0
    network.train()
    for _ in tqdm(range(config.steps), desc=progress, unit="step", disable=progress is None, leave=False,
                  mininterval=2.0):
        if position + batch_size > count:  # a new epoch: a fresh permutation, no partial batches
            order = torch.randperm(count, generator=generator, device=device)
            position = 0
        index = order[position:position + batch_size]
        position += batch_size
        batch = augment_batch(to_float(resident_images[index]), bool(config.hflip), config.crop_padding,
                              generator)
        with autocast_context("auto", device):  # bf16 on CUDA, fp32 elsewhere
            logits = network(batch)
        loss = F.cross_entropy(logits.float(), resident_labels[index], label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return network.eval()


@torch.no_grad()
def predict_probabilities(network: nn.Module, images: torch.Tensor, batch_size: int = 1000,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """Softmax class probabilities ``[N, num_classes]`` (float32, CPU) for uint8 ``images [N, C, H, W]``."""
    if device is None:
        parameter = next(network.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    network.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_float(images[start:start + batch_size].to(device))
        with autocast_context("auto", torch.device(device)):
            out.append(network(batch).float().softmax(dim=1).cpu())
    if not out:
        return torch.zeros((0, 0))
    return torch.cat(out)
