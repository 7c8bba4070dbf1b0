"""Gaussian blur as a degradation: per-step kernels, their variance schedules, and the composed operators.

Cold diffusion with blur (Bansal et al. 2022, "Cold Diffusion: Inverting Arbitrary Image Transforms
Without Noise", sec. 4.1) degrades an image by repeated convolution with Gaussian kernels,

    z_t = G_t * z_{t-1},   so   z_t = G̃_t * x  with  G̃_t = G_t * ... * G_1         (Bansal et al., eq. 3),

where ``G_t`` is a ``k x k`` Gaussian kernel of variance ``beta_t`` (the *blur schedule*) and every
convolution pads the image by reflection. Without padding, Gaussians compose to a Gaussian of summed
variance; with reflect padding that holds only away from the borders, and a truncated discrete kernel is
not exactly Gaussian either. So ``G̃_t`` is never approximated by one big kernel here: it is computed as
the literal product of the step operators.

Each step is separable (the 2-D kernel is the outer product of a 1-D kernel with itself) and reflect padding
is separable too, so the step on an ``H x W`` image is ``A_t x B_t^T`` with ``A_t`` (``H x H``) and ``B_t``
(``W x W``) the 1-D reflect-padded convolution matrices. Hence ``G̃_t x = M_t x N_t^T`` with
``M_t = A_t ... A_1``; these products are precomputed once per image size, in float64, for all ``t``.

Conventions: schedules are float64 tensors ``[T]`` whose entry ``i`` is the paper's ``beta_{i+1}``; "steps"
below count applied blur steps, ``0 .. T`` (``0`` = the identity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "BLUR_SCHEDULES",
    "blur_betas",
    "blur_step",
    "composed_matrices",
    "gaussian_kernel",
    "kernel_variance",
    "reflect_conv_matrix",
]

BLUR_SCHEDULES = ("constant", "linear", "exponential")


def _check_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):  # also rejects NaN
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def blur_betas(schedule: str, num_steps: int, beta: float = 1.0, beta_start: float = 0.1,
               beta_end: float = 2.0) -> torch.Tensor:
    """Per-step kernel variances ``beta_1 .. beta_T`` (pixels squared), float64 ``[T]``.

    * ``constant``: ``beta_t = beta`` (the report's setting: ``beta = 1``, ``T = 100``);
    * ``linear``: evenly spaced from ``beta_start`` to ``beta_end``;
    * ``exponential``: geometric from ``beta_start`` to ``beta_end``, ``beta_t = beta_start r^(t-1)``
      (Bansal et al.'s "exponential" blur routine grows the kernel width geometrically).

    Variances add under convolution, so away from the borders ``G̃_t`` blurs with variance
    ``sum_{s <= t} beta_s``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if schedule == "constant":
        _check_positive("blur beta", beta)
        return torch.full((num_steps,), float(beta), dtype=torch.float64)
    _check_positive("blur beta_start", beta_start)
    _check_positive("blur beta_end", beta_end)
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if schedule == "exponential":
        fraction = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)
        return beta_start * (beta_end / beta_start) ** fraction  # geometric: log beta_t linear in t
    raise ValueError(f"unknown blur schedule {schedule!r} (known: {', '.join(BLUR_SCHEDULES)})")


def gaussian_kernel(variance: float, size: int) -> torch.Tensor:
    """The 1-D kernel ``g[k] ∝ exp(-k^2 / (2 variance))`` for ``k = -(size//2) .. size//2``, summing to 1.

    Normalising the truncated kernel to sum 1 makes every step a weighted average: constant images are
    fixed points and, away from the borders, total intensity ("mass") is preserved.
    """
    _check_positive("kernel variance", variance)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size!r}")
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    weights = torch.exp(-offsets ** 2 / (2.0 * variance))
    return weights / weights.sum()


def kernel_variance(kernel: torch.Tensor) -> float:
    """The variance ``sum_k g[k] k^2`` of a centred, normalised 1-D kernel (below ``beta`` once truncated)."""
    offsets = torch.arange(kernel.numel(), dtype=torch.float64) - kernel.numel() // 2
    return float((kernel.double() * offsets ** 2).sum())


def _reflect(index: torch.Tensor, length: int) -> torch.Tensor:
    """Reflect out-of-range indices into ``0 .. length - 1`` without repeating the edge (``F.pad`` "reflect");
    valid for indices in ``-(length - 1) .. 2 (length - 1)``."""
    index = index.abs()  # -k -> k
    return torch.where(index > length - 1, 2 * (length - 1) - index, index)


def reflect_conv_matrix(kernel: torch.Tensor, length: int) -> torch.Tensor:
    """The ``length x length`` float64 matrix of 1-D convolution with ``kernel`` after reflect padding.

    Row ``i`` holds the weights output ``i`` gives each input: ``A[i, reflect(i + k)] += g[k]``.
    Rows sum to 1; columns do not near the borders (reflection counts some pixels twice).
    """
    radius = kernel.numel() // 2
    if radius >= length:
        raise ValueError(f"a kernel of size {kernel.numel()} needs images larger than {radius} pixels per side "
                         f"(reflect padding by {radius}), got {length}")
    rows = torch.arange(length)[:, None].expand(length, kernel.numel())
    columns = _reflect(rows + torch.arange(-radius, radius + 1)[None, :], length)
    weights = kernel.double()[None, :].expand(length, -1)
    matrix = torch.zeros(length, length, dtype=torch.float64)
    return matrix.index_put_((rows.reshape(-1), columns.reshape(-1)), weights.reshape(-1), accumulate=True)


def composed_matrices(kernels: list[torch.Tensor], length: int) -> torch.Tensor:
    """``[T + 1, length, length]`` float64: entry ``s`` is ``A_s ... A_1`` (entry 0 is the identity)."""
    composed = [torch.eye(length, dtype=torch.float64)]
    for kernel in kernels:
        composed.append(reflect_conv_matrix(kernel, length) @ composed[-1])  # z_t = G_t * z_{t-1} (eq. 3)
    return torch.stack(composed)


def blur_step(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """One blur step ``G * x`` of images ``[B, C, H, W]``: reflect padding, then a depthwise 2-D convolution.

    The direct definition (a full ``k x k`` kernel, the outer product of the 1-D ``kernel``); the process uses
    the equivalent matrix form, and the tests check one against the other.
    """
    radius = kernel.numel() // 2
    weights = torch.outer(kernel, kernel).to(x.dtype)
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(padded, weights.expand(channels, 1, -1, -1).contiguous(), groups=channels)
