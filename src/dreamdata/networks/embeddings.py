"""Conditioning embeddings shared by the denoising networks: the timestep and the class label.

* :func:`timestep_embedding` - the fixed sinusoidal encoding of the (integer or real) timestep, from the
  Transformer position encoding (Vaswani et al. 2017, section 3.5) as used by DDPM (Ho et al. 2020,
  appendix B; ``get_timestep_embedding`` in their code).
* :class:`ClassEmbedding` - a learned vector per class plus one extra learned row, the *null class*,
  which stands for "no label". Training with labels randomly replaced by the null class lets one network
  provide both the conditional and the unconditional prediction needed by classifier-free guidance
  (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[B, dim]`` of timesteps ``t`` (shape ``[B]``, long or float).

    With ``half = dim / 2`` and frequencies ``w_i = max_period ** (-i / (half - 1))`` for
    ``i = 0 .. half - 1`` (geometric from 1 down to ``1 / max_period``, as in Ho et al.'s code), the
    embedding is ``[sin(t w_0), ..., sin(t w_{half-1}), cos(t w_0), ..., cos(t w_{half-1})]``. So at
    ``t = 0`` the first half is all 0 and the second half all 1. ``t`` is used as a real number, so
    fractional timesteps (e.g. from a continuous-time sampler) embed smoothly.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"timestep embedding dim must be a positive even number, got {dim}")
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t[None]
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """Module wrapper of :func:`timestep_embedding` (no parameters)."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"timestep embedding dim must be a positive even number, got {dim}")
        self.dim = dim
        self.max_period = max_period

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(t, self.dim, self.max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}"


class ClassEmbedding(nn.Module):
    """Learned class embedding with ``num_classes + 1`` rows; the last row is the learned null class.

    ``forward(labels, batch_size)`` takes int64 labels ``[B]`` in ``0 .. num_classes`` (``num_classes``
    itself meaning "no class"), or ``None`` meaning every example is the null class.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ClassEmbedding needs num_classes >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.null_class = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch_size,), self.null_class, dtype=torch.long,
                                device=self.embedding.weight.device)
        return self.embedding(labels.long())



def conditioning_vector(time_mlp: nn.Sequential, time_features: int, class_embedding: Optional[ClassEmbedding],
                        t: torch.Tensor, class_labels: Optional[torch.Tensor], batch: int,
                        device: torch.device) -> torch.Tensor:
    """``MLP(sinusoid(t)) + class_embedding(y)``: the per-example vector every denoiser is conditioned on.

    ``t`` may be a scalar (broadcast over the batch); the sinusoid is cast to the MLP's dtype so the
    network also runs under bf16 autocast or in half precision.
    """
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    first_layer = time_mlp[0]
    cond = time_mlp(timestep_embedding(t, time_features).to(first_layer.weight.dtype))
    if class_embedding is not None:
        cond = cond + class_embedding(class_labels, batch)
    return cond
