"""Exponential moving average of network weights (Polyak averaging), used for sampling by default.

Ho et al. (2020) sample from an EMA of the weights (decay 0.9999); with short CPU budgets a fixed high
decay leaves the average stuck near the random initialisation, so by default the decay ramps up as
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the warm-up used by TensorFlow's
ExponentialMovingAverage with num_updates).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds an averaged copy of a module: ``shadow <- decay * shadow + (1 - decay) * weights``."""

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.current_decay()
        shadow = list(self.module.parameters())
        live = list(module.parameters())
        torch._foreach_lerp_(shadow, live, 1.0 - decay)
        for shadow_buffer, live_buffer in zip(self.module.buffers(), module.buffers()):
            shadow_buffer.copy_(live_buffer)
        self.num_updates += 1
