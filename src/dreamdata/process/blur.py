"""Cold diffusion with Gaussian blur (Bansal et al. 2022): a deterministic degradation and its x0 loss.

Implements the :class:`dreamdata.process.base.Process` protocol, so the training loop is the same as for
DDPM. The network is a *restorer* ``R(x_t, t) ≈ x_0`` trained with

    min_R  E_{x, t} || R(D(x, t), t) - x ||                                         (Bansal et al., eq. 1)

in L1 (the paper's choice) or L2, where ``D(x, t) = G̃_t * x`` is ``t`` blur steps
(:mod:`dreamdata.process.blur_operator`). Index convention of :mod:`dreamdata.process.base`: training index
``t`` in ``0 .. T-1`` is the paper's step ``t + 1``, so :meth:`q_sample` at index ``t`` applies ``t + 1``
steps, and :meth:`degrade` takes the number of steps ``0 .. T`` directly (0 = the clean image) - the form
the cold samplers need for ``D(x̂_0, t - 1)``.

Devices and precision: the composed operators are built once per image size in float64 on the CPU and
cached per ``(size, device, dtype)``; images in float64 use float64 operators, anything else float32.
"""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.config import ProcessConfig
from dreamdata.errors import ConfigError
from dreamdata.process.base import Network
from dreamdata.process.blur_operator import blur_betas, composed_matrices, gaussian_kernel
from dreamdata.process.rng import randint

__all__ = ["BLUR_LOSSES", "GaussianBlurDegradation"]

BLUR_LOSSES = ("l1", "l2")


class GaussianBlurDegradation:
    """``D(x, t) = G̃_t * x``: ``t`` reflect-padded Gaussian blur steps of variances ``betas[:t]``.

    Args:
        betas: per-step kernel variances ``beta_1 .. beta_T`` (see :func:`~dreamdata.process.blur_operator.blur_betas`).
        kernel_size: odd side of the square kernel (the report: 11).
        loss: ``"l1"`` or ``"l2"`` distance between the restorer's ``x̂_0`` and ``x_0``.
    """

    def __init__(self, betas: torch.Tensor, kernel_size: int = 11, loss: str = "l1") -> None:
        if loss not in BLUR_LOSSES:
            raise ValueError(f"unknown blur loss {loss!r} (known: {', '.join(BLUR_LOSSES)})")
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1:
            raise ValueError("betas must hold at least one variance")
        self.betas = betas
        self.num_steps: int = int(betas.numel())
        self.kernel_size = int(kernel_size)
        self.kernels = [gaussian_kernel(float(beta), self.kernel_size) for beta in betas]  # G_1 .. G_T
        self.loss = loss
        self._matrices: dict[int, torch.Tensor] = {}  # image side -> [T + 1, n, n] float64 (CPU)
        self._cast: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: ProcessConfig) -> "GaussianBlurDegradation":
        """Build from the ``blur_*``, ``kernel_size`` and ``num_steps`` keys of a ProcessConfig."""
        betas = blur_betas(config.blur_schedule, config.num_steps, config.blur_beta, config.blur_beta_start,
                           config.blur_beta_end)
        return cls(betas, kernel_size=config.kernel_size, loss=config.blur_loss)

    def __repr__(self) -> str:
        return (f"GaussianBlurDegradation(num_steps={self.num_steps}, kernel_size={self.kernel_size}, "
                f"loss={self.loss!r}, total_variance={float(self.betas.sum()):g})")

    # -- the operators ----------------------------------------------------------------------------

    def operators(self, length: int, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``[T + 1, length, length]``: entry ``s`` is the 1-D matrix of ``s`` composed blur steps (cached)."""
        if length not in self._matrices:
            try:
                self._matrices[length] = composed_matrices(self.kernels, length)
            except ValueError as error:
                raise ConfigError(f"config key process.kernel_size={self.kernel_size}: {error}") from None
        key = (length, torch.device(device), dtype)
        if key not in self._cast:
            self._cast[key] = self._matrices[length].to(device=key[1], dtype=dtype)
        return self._cast[key]

    def degrade(self, x: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
        """``D(x, s) = G̃_s * x`` for images ``[B, C, H, W]``; ``steps`` (int or long ``[B]``) in ``0 .. T``.

        Computed as ``M_s x N_s^T`` with the composed 1-D operators (exactly the composition of the steps).
        """
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        steps = torch.as_tensor(steps, device=x.device, dtype=torch.long)
        if steps.numel() and (int(steps.min()) < 0 or int(steps.max()) > self.num_steps):
            raise ValueError(f"blur steps must lie in 0..{self.num_steps}, got {steps.tolist()}")
        rows = self.operators(x.shape[-2], x.device, dtype)[steps]  # [B, H, H] or [H, H]
        cols = self.operators(x.shape[-1], x.device, dtype)[steps]
        if steps.ndim == 1:  # one operator per image, broadcast over channels
            rows, cols = rows[:, None], cols[:, None]
        with torch.autocast(x.device.type, enabled=False):  # the blur in full precision, even under bf16 autocast
            blurred = rows @ x.to(dtype) @ cols.transpose(-1, -2)  # Bansal et al. 2022, eq. 3 (z_t = G̃_t * x)
        return blurred.to(x.dtype) if x.dtype in (torch.float32, torch.float64) else blurred

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The degraded state at training index ``t`` (``t + 1`` blur steps). ``noise`` is ignored: the
        degradation is deterministic (the argument keeps the call compatible with Gaussian diffusion)."""
        return self.degrade(x0, torch.as_tensor(t) + 1)

    # -- training ---------------------------------------------------------------------------------

    def sample_timesteps(self, batch_size: int, device: torch.device | str,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Training timesteps ``t ~ Uniform{0, ..., T-1}``, a long tensor ``[B]`` drawn from ``generator``."""
        return randint(self.num_steps, batch_size, device, generator)

    def training_losses(self, network: Network, x0: torch.Tensor, class_labels: Optional[torch.Tensor],
                        generator: Optional[torch.Generator] = None, *,
                        t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-example L1 or L2 distance ``[B]`` (float32) between ``network(D(x0, t + 1), t, labels)`` and ``x0``.

        Only ``t`` is random (drawn from ``generator``, or torch's global RNG when ``None``); it may be
        given explicitly instead. Averaged over all non-batch dimensions (Bansal et al. 2022, eq. 1).
        """
        if t is None:
            t = self.sample_timesteps(x0.shape[0], x0.device, generator)
        x_t = self.q_sample(x0, t)
        output = network(x_t, t, class_labels)
        if output.shape != x0.shape:
            raise ValueError(f"network output has shape {tuple(output.shape)}, expected {tuple(x0.shape)} "
                             f"(the shape of the images)")
        error = output.float() - x0.float()
        distance = error.abs() if self.loss == "l1" else error.pow(2)
        return distance.mean(dim=tuple(range(1, x0.ndim)))
