"""What every sampler does the same way: check its arguments, and turn ``x_t`` into ``(x0_hat, eps_hat)``.

Each sampler (:mod:`~dreamdata.sampling.ddpm`, :mod:`~dreamdata.sampling.ddim`,
:mod:`~dreamdata.sampling.dpm_solver`) is a loop over the visited timesteps that calls
:func:`predict_x0_eps` once per step and differs only in how it moves from one state to the next. Keeping
the guidance, the parameterisation and the clipping here means the samplers cannot disagree about them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch

from dreamdata.process.base import Network, Process
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import GeneratorLike, check_generator
from dreamdata.sampling.guidance import check_guidance_interval, guided_output, resolve_null_class, step_guidance_scales
from dreamdata.sampling.thresholding import check_x0_clip, clip_x0
from dreamdata.sampling.timesteps import check_timesteps

__all__ = ["Callback", "Prediction", "SamplingSetup", "initial_state", "predict", "predict_x0_eps", "prepare_sampling"]

Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""``callback(i, t, x_t, x0_hat)``: step number ``i`` (0-based), training index ``t``, the state at the start
of the step and the (clipped) ``x0_hat`` the step used. The tensors are the sampler's own: read or copy
them, never modify them in place."""


class SamplingSetup(NamedTuple):
    """Checked, normalised sampler arguments."""

    steps: list[int]  # strictly descending training indices to visit
    class_labels: Optional[torch.Tensor]  # on the noise's device, or None
    null_class: Optional[int]
    guidance_scales: list[float]  # the guidance weight of each step: w, or 0 outside the guidance interval


def prepare_sampling(network: Network, process: Process, noise: torch.Tensor,
                     timesteps: Optional[torch.Tensor | Sequence[int]], class_labels: Optional[torch.Tensor],
                     guidance_scale: float, generator: GeneratorLike, x0_clip: str,
                     null_class: Optional[int], guidance_interval: Optional[Sequence[float]] = None
                     ) -> SamplingSetup:
    """Validate the shared sampler arguments; ``timesteps=None`` means every index ``T - 1 .. 0``.

    Uses only ``process.num_steps``, so the cold samplers share it, unless a ``guidance_interval`` is
    given: that is in EDM noise levels ``σ`` (see :mod:`~dreamdata.sampling.guidance`) and needs the
    process's ``schedule.alpha_bar``. ``noise`` is the starting state.
    """
    check_x0_clip(x0_clip)
    steps = check_timesteps(torch.arange(process.num_steps - 1, -1, -1) if timesteps is None else timesteps,
                            process.num_steps)
    guidance_interval = check_guidance_interval(guidance_interval)
    alpha_bar = getattr(getattr(process, "schedule", None), "alpha_bar", None)
    if guidance_interval is not None and alpha_bar is None:
        raise ValueError(f"guidance_interval={guidance_interval}: the interval is in Gaussian noise levels sigma, "
                         f"and {type(process).__name__} has none (no alpha_bar schedule)")
    check_generator(generator, noise.device)
    if class_labels is not None:
        class_labels = class_labels.to(noise.device)
        if class_labels.shape != noise.shape[:1]:
            raise ValueError(f"class_labels has shape {tuple(class_labels.shape)}, expected "
                             f"({noise.shape[0]},) (one label per sample)")
    null_class = resolve_null_class(network, class_labels, guidance_scale, null_class)
    scales = step_guidance_scales(alpha_bar, steps.tolist(), guidance_scale, guidance_interval)
    return SamplingSetup(steps.tolist(), class_labels, null_class, scales)


def initial_state(noise: torch.Tensor) -> torch.Tensor:
    """The sampler's starting state: ``noise`` itself, promoted to float32 if it is half precision.

    The state is carried in at least float32 (many small updates would drift in 16-bit floats); samplers
    cast the result back to ``noise``'s dtype.
    """
    return noise if noise.dtype in (torch.float32, torch.float64) else noise.float()


class Prediction(NamedTuple):
    """One step's (guided, clipped) prediction at ``x_tau``."""

    x0: torch.Tensor  # x0_hat
    eps: torch.Tensor  # eps_hat, consistent with x0_hat and x_tau
    variance: Optional[torch.Tensor]  # the raw variance channels of a learned_range network, else None


def predict(network: Network, process: GaussianDiffusion, x: torch.Tensor, tau: int, setup: SamplingSetup,
            guidance_scale: float, x0_clip: str) -> Prediction:
    """The (guided, clipped) clean-image prediction ``x0_hat`` at state ``x`` = ``x_tau``, its ``eps_hat``, and
    (for a ``learned_range`` process) the raw variance channels.

    When ``x0_hat`` is clipped, ``eps_hat`` is re-derived from it via ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps``
    (Ho et al. 2020, eq. 4), so the pair stays consistent with ``x`` and a sampler that uses both moves
    towards the clipped prediction (as diffusers' DDIM does). Guidance combines the prediction channels
    only (see :func:`~dreamdata.sampling.guidance.guided_output`). The network is fed
    ``process.network_input(x, t)`` (``x`` itself unless the process is EDM-preconditioned).
    """
    t = torch.full((x.shape[0],), tau, device=x.device, dtype=torch.long)
    output = guided_output(network, process.network_input(x, t), t, setup.class_labels, guidance_scale,
                           setup.null_class, guided_channels=x.shape[1])
    prediction, variance = process.split_output(output, x)
    x0_hat, eps_hat = process.predict_x0_and_eps(prediction, x, t)
    if x0_clip != "none":
        x0_hat = clip_x0(x0_hat, x0_clip)
        alpha_bar = float(process.schedule.alpha_bar[tau])
        eps_hat = (x - alpha_bar ** 0.5 * x0_hat) / (1.0 - alpha_bar) ** 0.5  # Ho et al. 2020, eq. 4 solved for eps
    return Prediction(x0_hat, eps_hat, variance)


def predict_x0_eps(network: Network, process: GaussianDiffusion, x: torch.Tensor, tau: int,
                   setup: SamplingSetup, guidance_scale: float, x0_clip: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0_hat, eps_hat)`` of :func:`predict`: what the samplers that ignore a learned variance need
    (DDIM and DPM-Solver++ follow the mean alone)."""
    prediction = predict(network, process, x, tau, setup, guidance_scale, x0_clip)
    return prediction.x0, prediction.eps
