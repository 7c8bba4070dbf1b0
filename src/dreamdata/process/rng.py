"""Random draws that take an optional ``torch.Generator``, with a clear error on a device mismatch.

``torch.randn(..., generator=g, device=d)`` requires ``g`` to live on ``d``'s device type; otherwise torch
fails with a message that does not say which argument is wrong. Processes and samplers draw through these
helpers so the generator (or torch's global RNG, when it is ``None``) is the only source of randomness.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["check_generator", "randint", "randn_like"]


def check_generator(generator: Optional[torch.Generator], device: torch.device | str) -> None:
    """Raise ``ValueError`` if ``generator`` cannot draw on ``device``."""
    if generator is None:
        return
    device = torch.device(device)
    if generator.device.type != device.type:
        raise ValueError(f"the random generator lives on {generator.device} but the draw is on {device}; "
                         f"create it with torch.Generator(device={str(device)!r})")


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal noise with ``x``'s shape, dtype and device, drawn from ``generator``."""
    check_generator(generator, x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def randint(high: int, size: int, device: torch.device | str,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Long tensor ``[size]`` uniform on ``{0, ..., high - 1}``, drawn from ``generator``."""
    check_generator(generator, device)
    return torch.randint(0, high, (size,), generator=generator, device=device, dtype=torch.long)
