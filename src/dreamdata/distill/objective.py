"""The distillation loss of one batch: the teacher's two DDIM steps, the Algorithm-2 target, the student's
weighted x-space error (Salimans & Ho 2022, Algorithm 2; the formulas are in :mod:`dreamdata.distill.target`).

Unlike a sampler, which visits one timestep for the whole batch, a training batch holds one student step
``j`` per example, so the (guided, clipped) prediction here takes a ``t`` per example. It is otherwise
:func:`dreamdata.sampling.common.predict`: classifier-free guidance on the prediction channels (Ho &
Salimans 2022, eq. 6, :func:`~dreamdata.sampling.guidance.guided_output`), the process's parameterisation
turned into ``(x̂, ε̂)``, and with clipping ``ε̂`` re-derived from the clipped ``x̂``.
"""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.distill.target import StudentSteps, ddim_step, distillation_target, truncated_snr_weight
from dreamdata.process.base import Network
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import randint, randn_like
from dreamdata.sampling.guidance import guided_output
from dreamdata.sampling.thresholding import clip_x0

__all__ = ["distillation_losses", "predict_at", "teacher_two_steps"]


def _per_example(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped ``[B, 1, ..., 1]`` in ``like``'s dtype and device."""
    return values.to(like.device)[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def predict_at(network: Network, process: GaussianDiffusion, x: torch.Tensor, t: torch.Tensor,
               class_labels: Optional[torch.Tensor], guidance_scale: float, null_class: Optional[int],
               x0_clip: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x̂0, ε̂)`` of ``network`` at states ``x`` with one timestep per example (``t`` long ``[B]``)."""
    output = guided_output(network, process.network_input(x, t), t, class_labels, guidance_scale, null_class,
                           guided_channels=x.shape[1])
    prediction, _ = process.split_output(output, x)
    x0_hat, eps_hat = process.predict_x0_and_eps(prediction, x, t)
    if x0_clip != "none":
        x0_hat = clip_x0(x0_hat, x0_clip)
        alpha_bar = _per_example(process.schedule.alpha_bar, t, x)
        eps_hat = (x - alpha_bar.sqrt() * x0_hat) / (1.0 - alpha_bar).sqrt()  # Ho et al. 2020, eq. 4 solved for eps
    return x0_hat, eps_hat


@torch.no_grad()
def teacher_two_steps(teacher: Network, process: GaussianDiffusion, z_t: torch.Tensor, j: torch.Tensor,
                      table: StudentSteps, class_labels: Optional[torch.Tensor], guidance_scale: float,
                      null_class: Optional[int], x0_clip: str) -> torch.Tensor:
    """``z_t''``: two deterministic DDIM steps of the teacher, ``t → t' → t''``, from the states ``z_t`` of
    student steps ``j`` (long ``[B]``) (Salimans & Ho 2022, Algorithm 2, the teacher's part)."""
    device = z_t.device
    x0_hat, eps_hat = predict_at(teacher, process, z_t, table.t.to(device)[j], class_labels, guidance_scale,
                                 null_class, x0_clip)
    z_mid = ddim_step(x0_hat, eps_hat, table.alpha_bar_mid.to(device)[j])  # Song et al. 2021, eq. 12
    x0_hat, eps_hat = predict_at(teacher, process, z_mid, table.t_mid.to(device)[j], class_labels, guidance_scale,
                                 null_class, x0_clip)
    return ddim_step(x0_hat, eps_hat, table.alpha_bar_end.to(device)[j])  # Song et al. 2021, eq. 12


def distillation_losses(student: Network, teacher: Network, process: GaussianDiffusion, x0: torch.Tensor,
                        class_labels: Optional[torch.Tensor], table: StudentSteps, generator: torch.Generator,
                        guidance_scale: float = 0.0, null_class: Optional[int] = None,
                        x0_clip: str = "none") -> torch.Tensor:
    """Per-example loss ``[B]`` of ``student`` on clean images ``x0``: ``max(SNR_t, 1) ||x̂_student - x̃||²``
    (mean over pixels), the student predicting in the process's own parameterisation.

    Draws the student step ``j ~ Uniform{0 .. N/2 - 1}`` and then the noise from ``generator``;
    ``z_t = q_sample(x0, t_j)``; ``x̃`` from the teacher's two steps (guided at ``guidance_scale``, its
    ``x̂`` clipped by ``x0_clip``). The student is conditioned on the same labels, unguided and unclipped.
    """
    j = randint(len(table.t), x0.shape[0], x0.device, generator)
    noise = randn_like(x0, generator)
    t = table.t.to(x0.device)[j]
    z_t = process.q_sample(x0, t, noise)  # Ho et al. 2020, eq. 4
    z_end = teacher_two_steps(teacher, process, z_t, j, table, class_labels, guidance_scale, null_class, x0_clip)
    alpha_bar_t = table.alpha_bar_t.to(x0.device)[j]
    target = distillation_target(z_t, z_end, alpha_bar_t, table.alpha_bar_end.to(x0.device)[j])  # Algorithm 2
    prediction, _ = process.split_output(student(process.network_input(z_t, t), t, class_labels), x0)
    x0_hat, _ = process.predict_x0_and_eps(prediction, z_t, t)
    dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
    mse = (x0_hat.to(dtype) - target.to(dtype)).pow(2).mean(dim=tuple(range(1, x0.ndim)))
    return mse * truncated_snr_weight(alpha_bar_t).to(mse)  # Salimans & Ho 2022, sec. 4 (truncated SNR)
