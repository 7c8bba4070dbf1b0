"""Random draws that take an optional generator, with a clear error on a device mismatch.

``torch.randn(..., generator=g, device=d)`` requires ``g`` to live on ``d``'s device type; otherwise torch
fails with a message that does not say which argument is wrong. Processes and samplers draw through these
helpers so the generator (or torch's global RNG, when it is ``None``) is the only source of randomness.

A generator is either a ``torch.Generator`` (one stream for the whole batch) or a
:class:`PerSampleGenerator` (one stream per sample, keyed by the sample's global index), which makes a
sample's image depend only on ``(seed, index)`` and not on which batch it was drawn in - so a data set can
be generated in any batch size, resumed part-way, or have single images regenerated.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

__all__ = [
    "GeneratorLike",
    "PerSampleGenerator",
    "check_generator",
    "per_sample_noise",
    "per_sample_seed",
    "randint",
    "randn",
    "randn_like",
]

_MASK64 = (1 << 64) - 1
NOISE_STREAM = 0
"""Stream of the per-step noise a sampler draws from a :class:`PerSampleGenerator`."""
START_STREAM = 1
"""Stream of :func:`per_sample_noise`, kept apart so the start noise never repeats the per-step noise."""


def _splitmix64(z: int) -> int:
    """One round of the SplitMix64 mixer (Steele, Lea & Flood 2014): a bijection on 64-bit integers that
    sends neighbouring inputs to unrelated outputs."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def per_sample_seed(seed: int, index: int, stream: int = NOISE_STREAM) -> int:
    """The 64-bit seed of sample ``index``'s generator: ``seed * 1_000_003 + index``, mixed with the stream.

    ``seed * 1_000_003 + index`` is distinct for every (seed, index) with ``0 <= index < 1_000_003``; the
    SplitMix64 rounds turn it (and the stream number) into a well-spread seed, so neighbouring samples and
    the start-noise / per-step-noise streams of one sample do not get related torch seeds.
    """
    for name, value in (("seed", seed), ("index", index), ("stream", stream)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if index < 0:
        raise ValueError(f"sample indices must be >= 0, got {index}")
    return _splitmix64(_splitmix64((seed * 1_000_003 + index) & _MASK64) ^ stream)


class PerSampleGenerator:
    """One ``torch.Generator`` per sample, so each sample's random draws depend only on ``(seed, index)``.

    Args:
        seed: the run's seed.
        indices: global sample indices of the batch rows, in row order (e.g. ``range(start, start + B)``).
        device: where the draws are made (the generators live there).
        stream: which independent stream of each sample to use; samplers' per-step noise uses
            :data:`NOISE_STREAM` (the default), :func:`per_sample_noise` uses :data:`START_STREAM`.

    :meth:`randn_like` draws each row from that row's own generator and stacks the rows, so sample ``i``
    gets the same numbers whether it is drawn alone, in a batch of 6 or in a batch of 4096. Drawing row by
    row costs one small kernel per sample and draw - negligible next to a network evaluation.
    """

    def __init__(self, seed: int, indices: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu",
                 stream: int = NOISE_STREAM) -> None:
        self.seed = seed
        self.indices = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
        if not self.indices:
            raise ValueError("PerSampleGenerator needs at least one sample index")
        self.device = torch.device(device)
        self.stream = stream
        self.generators = [torch.Generator(device=self.device).manual_seed(per_sample_seed(seed, i, stream))
                           for i in self.indices]

    def __len__(self) -> int:
        return len(self.generators)

    def __repr__(self) -> str:
        return (f"PerSampleGenerator(seed={self.seed}, indices=[{len(self)} samples], device={str(self.device)!r}, "
                f"stream={self.stream})")

    def randn(self, *shape_per_sample: int, device: Optional[torch.device | str] = None,
              dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Standard normal ``[len(self), *shape_per_sample]``; row ``k`` from sample ``indices[k]``'s generator."""
        if len(shape_per_sample) == 1 and isinstance(shape_per_sample[0], (tuple, list, torch.Size)):
            shape_per_sample = tuple(shape_per_sample[0])
        device = self.device if device is None else torch.device(device)
        check_generator(self, device)
        return torch.stack([torch.randn(shape_per_sample, generator=g, device=device, dtype=dtype)
                            for g in self.generators])

    def rand(self, *shape_per_sample: int, device: Optional[torch.device | str] = None,
             dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Uniform ``[0, 1)`` draws ``[len(self), *shape_per_sample]``; row ``k`` from ``indices[k]``'s generator."""
        device = self.device if device is None else torch.device(device)
        check_generator(self, device)
        return torch.stack([torch.rand(shape_per_sample, generator=g, device=device, dtype=dtype)
                            for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise with ``x``'s shape, dtype and device; ``x``'s first dimension is the batch."""
        if x.ndim < 1 or x.shape[0] != len(self):
            raise ValueError(f"this PerSampleGenerator has {len(self)} samples but the draw has shape "
                             f"{tuple(x.shape)} (first dimension = batch)")
        return self.randn(*x.shape[1:], device=x.device, dtype=x.dtype)


GeneratorLike = Union[torch.Generator, PerSampleGenerator, None]


def per_sample_noise(seed: int, indices: Sequence[int] | torch.Tensor, shape: Sequence[int],
                     device: torch.device | str = "cpu", dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Starting noise ``[len(indices), *shape]``, row ``k`` depending only on ``(seed, indices[k])``.

    ``shape`` is one sample's shape (``[C, H, W]``). Drawn from the :data:`START_STREAM` streams, so it is
    independent of the per-step noise of a ``PerSampleGenerator(seed, indices)`` passed to a sampler.
    """
    return PerSampleGenerator(seed, indices, device, stream=START_STREAM).randn(*shape, dtype=dtype)


def check_generator(generator: GeneratorLike, device: torch.device | str) -> None:
    """Raise ``ValueError`` if ``generator`` cannot draw on ``device``."""
    if generator is None:
        return
    device = torch.device(device)
    if generator.device.type != device.type:
        raise ValueError(f"the random generator lives on {generator.device} but the draw is on {device}; "
                         f"create it with torch.Generator(device={str(device)!r})")


def randn_like(x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
    """Standard normal noise with ``x``'s shape, dtype and device, drawn from ``generator``.

    A :class:`PerSampleGenerator` draws each row (``x[k]``) from sample ``k``'s own stream.
    """
    if isinstance(generator, PerSampleGenerator):
        return generator.randn_like(x)
    check_generator(generator, x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def randint(high: int, size: int, device: torch.device | str,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Long tensor ``[size]`` uniform on ``{0, ..., high - 1}``, drawn from ``generator``."""
    if isinstance(generator, PerSampleGenerator):
        raise ValueError("randint needs a torch.Generator, not a PerSampleGenerator")
    check_generator(generator, device)
    return torch.randint(0, high, (size,), generator=generator, device=device, dtype=torch.long)


def randn(size: int, device: torch.device | str, generator: Optional[torch.Generator] = None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal ``[size]`` (float32 by default, which every device supports), drawn from ``generator``."""
    if isinstance(generator, PerSampleGenerator):
        raise ValueError("randn needs a torch.Generator, not a PerSampleGenerator")
    check_generator(generator, device)
    return torch.randn((size,), generator=generator, device=device, dtype=dtype)
