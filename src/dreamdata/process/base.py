"""The contract between a forward corruption process, the training loop and the samplers.

A *process* owns everything about how clean images ``x_0`` are corrupted into ``x_t`` and what a
network is trained to predict from ``x_t``. The training loop only ever calls
:meth:`Process.training_losses`, so a Gaussian-noise DDPM and a deterministic degradation such as cold
diffusion's Gaussian blur (Bansal et al. 2022) plug into the same loop.

Conventions shared by every process:

* images are float tensors in ``[-1, 1]``, shape ``[B, C, H, W]``;
* timesteps are integer indices ``t`` in ``0 .. num_steps - 1``; index ``t`` is the paper's step
  ``t + 1`` (so index 0 is the least corrupted state and ``num_steps - 1`` the fully corrupted one);
* a network is called as ``network(x_t, t, class_labels)`` where ``class_labels`` is a long tensor
  ``[B]`` or ``None`` (unconditional / the learned null class). A Gaussian process may rescale the state
  first: callers pass ``process.network_input(x_t, t)`` (``x_t`` itself except for EDM's preconditioning).
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import torch

Network = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


@runtime_checkable
class Process(Protocol):
    """A forward corruption process ``q(x_t | x_0)`` together with its training objective."""

    num_steps: int

    def sample_timesteps(self, batch_size: int, device: torch.device,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw training timesteps in ``0 .. num_steps - 1`` as a long tensor ``[B]`` (uniform unless the
        process is configured otherwise, e.g. a Gaussian process's log-normal noise levels)."""
        ...

    def training_losses(self, network: Network, x0: torch.Tensor, class_labels: Optional[torch.Tensor],
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Per-example training loss ``[B]`` of ``network`` on clean images ``x0``.

        Draws timesteps (and noise, for stochastic processes) from ``generator`` when given, else from
        torch's global RNG; the training loop averages the result.
        """
        ...
