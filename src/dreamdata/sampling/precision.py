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

import warnings
from typing import Any

import torch

from dreamdata.precisions import SAMPLING_PRECISIONS

__all__ = ["PRECISIONS", "check_precision", "cpu_has_fast_bf16", "in_precision"]

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


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512 or AMX; on ARM, its bf16
    extension). Without that, bf16 autocast falls back to slow reference kernels, slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


class Bfloat16Network:
    """Calls ``network`` under bf16 autocast on the device of its first tensor argument and returns float32;
    every attribute (``in_channels``, ``image_size``, ``null_class``, ``eval``...) is the network's own.
    On a CPU without fast bf16 it says so once: the user asked for speed and would get the opposite."""

    def __init__(self, network):
        self.network = network
        self._checked_cpu = False

    def __call__(self, *args, **kwargs):
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        if device.type == "cpu" and not self._checked_cpu:
            self._checked_cpu = True
            if not cpu_has_fast_bf16():
                warnings.warn("precision bf16: this CPU has no fast bf16 kernels (oneDNN needs AVX512 or AMX), so "
                              "bf16 sampling will likely be slower than fp32; use --precision fp32 "
                              "(dream.precision=fp32 in a study)", stacklevel=2)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            output = self.network(*args, **kwargs)
        return _to_float32(output)

    def __getattr__(self, name: str):
        return getattr(self.network, name)


def in_precision(network, precision: str):
    """``network`` itself for ``fp32``; for ``bf16`` a :class:`Bfloat16Network` around it."""
    return Bfloat16Network(network) if check_precision(precision) == "bf16" else network
