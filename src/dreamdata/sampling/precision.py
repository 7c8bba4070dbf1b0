"""The arithmetic precision a sampler runs its network in: ``fp32`` (the default) or ``bf16``.

``bf16`` runs each network evaluation under ``torch.autocast(dtype=torch.bfloat16)``: convolutions and matrix
products take bfloat16 inputs (8-bit mantissa) and accumulate in float32, where the CPU or GPU has bf16 units
(on this project's 2-core AMD EPYC with AVX512-BF16, a forward pass of the demo UNet runs ~1.8x faster). The
network's output is cast back to float32 before the sampler uses it, so the sampler's own update arithmetic
(the DDIM/DDPM/DPM-Solver steps, the guidance mix ``(1 + w) ε(x, c) - w ε(x)``, the x̂0 clipping) stays in
float32 and only the network's rounding changes. The rounding is not free: bf16 keeps ~3 significant digits,
so the images differ from fp32's by a little at every step; what that does to FID is a measurement
(BENCHMARKS.md), not an assumption.
"""

from __future__ import annotations

from typing import Any

import torch

from dreamdata.precisions import SAMPLING_PRECISIONS

__all__ = ["PRECISIONS", "check_precision", "in_precision"]

PRECISIONS = SAMPLING_PRECISIONS


def check_precision(precision: str, option: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming ``option``."""
    if precision not in PRECISIONS:
        raise ValueError(f"{option} {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def _to_float32(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (tuple, list)):
        return type(output)(_to_float32(item) for item in output)
    return output


class Bfloat16Network:
    """Calls ``network`` under bf16 autocast on the device of its first tensor argument and returns float32;
    every attribute (``in_channels``, ``image_size``, ``null_class``, ``eval``...) is the network's own."""

    def __init__(self, network):
        self.network = network

    def __call__(self, *args, **kwargs):
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            output = self.network(*args, **kwargs)
        return _to_float32(output)

    def __getattr__(self, name: str):
        return getattr(self.network, name)


def in_precision(network, precision: str):
    """``network`` itself for ``fp32``; for ``bf16`` a :class:`Bfloat16Network` around it."""
    return Bfloat16Network(network) if check_precision(precision) == "bf16" else network
