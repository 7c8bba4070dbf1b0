"""One distillation round as an optimisation: a frozen teacher, a student, its optimizer, ``steps`` updates.

A round is a plain regression onto a closed-form target, so its only state is the student's weights and
the optimizer's moments. The learning rate is annealed linearly from ``lr`` to 0 over the round (our choice:
rounds are short at CPU budgets, and annealing lets the student settle on the round's targets without an
EMA lagging behind it; so a distilled checkpoint's sampling weights are the student's own). The randomness
of update ``k`` (the student steps ``j`` and the noise) comes from a generator seeded from ``(seed,
global step)``, and the only other draw is the student's own dropout from torch's global RNG, which the
run saves (:mod:`dreamdata.distill.run`), so a resumed round continues exactly.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from dreamdata.distill.objective import distillation_losses
from dreamdata.distill.target import student_steps
from dreamdata.errors import TrainingDivergedError
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import per_sample_seed

__all__ = ["DISTILL_STREAM", "DistillationRound"]

DISTILL_STREAM = 2
"""The generator stream of the distillation's draws (0 and 1 are the samplers')."""


class DistillationRound:
    """Train ``student`` to do two of ``teacher``'s DDIM steps on ``teacher_grid`` in one.

    Args:
        teacher: frozen (put in eval mode, never updated).
        student: trained in place (usually initialised as a copy of the teacher).
        optimizer: over the student's parameters; its learning rate is set at every update.
        steps: updates in the round (the learning rate reaches 0 after the last).
        lr: the learning rate at the round's first update.
        grad_clip: max gradient norm (0: none).
        guidance_scale, null_class: classifier-free guidance of the teacher (the student is unguided).
        x0_clip: clipping of the teacher's ``x̂`` ("none", "static", "dynamic").
        seed: the base seed of the per-update generators.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, process: GaussianDiffusion, teacher_grid: list[int],
                 optimizer: torch.optim.Optimizer, steps: int, lr: float, grad_clip: float = 1.0,
                 guidance_scale: float = 0.0, null_class: Optional[int] = None, x0_clip: str = "none",
                 seed: int = 0) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student
        self.process = process
        self.table = student_steps(teacher_grid, process.schedule.alpha_bar)
        self.optimizer = optimizer
        self.steps, self.lr, self.grad_clip = steps, lr, grad_clip
        self.guidance_scale, self.null_class, self.x0_clip = guidance_scale, null_class, x0_clip
        self.seed = seed

    def lr_at(self, k: int) -> float:
        """The learning rate of update ``k`` (0-based): linear from ``lr`` to 0 over the round."""
        return self.lr * (1.0 - k / self.steps)

    def step(self, k: int, global_step: int, x0: torch.Tensor, class_labels: Optional[torch.Tensor]) -> float:
        """Update ``k`` of the round on a batch of clean images; returns the batch's mean loss.

        A non-finite loss or gradient is a :class:`~dreamdata.errors.TrainingDivergedError` (nothing is
        applied): a regression onto finite targets only diverges with a learning rate far too high.
        """
        generator = torch.Generator(device=x0.device).manual_seed(
            per_sample_seed(self.seed, global_step, DISTILL_STREAM))
        self.student.train()
        loss = distillation_losses(self.student, self.teacher, self.process, x0, class_labels, self.table, generator,
                                   self.guidance_scale, self.null_class, self.x0_clip).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parameters = [p for p in self.student.parameters() if p.grad is not None]
        if self.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        value = float(loss.detach())
        if not (math.isfinite(value) and math.isfinite(float(norm))):
            raise TrainingDivergedError(f"distillation update {global_step}: the loss ({value:g}) or its gradient "
                                        f"norm ({float(norm):g}) is not finite; try a lower --lr")
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(k)
        self.optimizer.step()
        return value
