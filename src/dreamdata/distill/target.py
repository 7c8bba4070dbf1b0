"""The maths of one distillation round (Salimans & Ho 2022, Algorithm 2), as pure functions.

Notation as in the paper: a state is ``z_t = α_t x + σ_t ε`` with ``α_t = sqrt(ᾱ_t)`` and
``σ_t = sqrt(1 - ᾱ_t)`` (our ``alpha_bar`` is their ``α_t²``). A deterministic DDIM step (Song et al. 2021,
eq. 12 with η = 0) from ``t`` to ``s < t`` with the prediction ``x̂`` is

    z_s = α_s x̂ + σ_s ε̂,    ε̂ = (z_t - α_t x̂) / σ_t                                  (DDIM, eq. 12)

The teacher takes two such steps ``t → t' → t''``; the student must land on the same ``z_t''`` in one step
``t → t''``. Solving the DDIM step for the ``x̂`` that does so gives the student's target

    x̃ = (z_t'' - (σ_t'' / σ_t) z_t) / (α_t'' - (σ_t'' / σ_t) α_t)                   (Algorithm 2)

The denominator is ``σ_t'' (α_t''/σ_t'' - α_t/σ_t) > 0`` because the signal-to-noise ratio grows as ``t``
falls. ``t'' = "clean"`` (after the grid's last index, where DDIM lands on ``x̂`` itself) is ``ᾱ = 1``:
``α = 1``, ``σ = 0``, and then ``x̃ = z_t''``. The loss is the x-space MSE with the "truncated SNR" weight
``max(α_t² / σ_t², 1)`` (their sec. 4), i.e. ``max(||x - x̂||², ||ε - ε̂||²)``, since
``ε - ε̂ = (α_t / σ_t)(x̂ - x)`` at a fixed ``z_t``.

Grids. Each round halves the steps, and the student's step ``j`` must cover exactly the teacher's steps
``2j`` and ``2j + 1``, so the student's grid is every other index of the teacher's. Lin et al.'s ``trailing``
grid ``round(T - i T / N) - 1`` has that property for every ``N`` (the grid for ``N / 2`` is the grid for
``N`` at even ``i``, computed from the same float values), starts at ``T - 1`` (pure noise, where sampling
starts) and is the discrete form of the paper's uniform grid ``t_i = i / N``; ``linspace`` and ``leading``
grids do not nest. So every distillation runs on trailing grids.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dreamdata.sampling.timesteps import timestep_sequence

__all__ = ["StudentSteps", "ddim_step", "distillation_grids", "distillation_target", "student_steps",
           "truncated_snr_weight"]

GRID_SPACING = "trailing"


def distillation_grids(num_train_steps: int, from_steps: int, to_steps: int) -> list[list[int]]:
    """The teacher grids of the rounds, then the final student's: ``[from_steps, from_steps / 2, ...,
    to_steps]`` trailing grids (descending training indices). ``ValueError`` unless ``to_steps <= from_steps
    <= T`` and ``from_steps / to_steps`` is a power of two."""
    for name, value in (("from_steps", from_steps), ("to_steps", to_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if from_steps > num_train_steps:
        raise ValueError(f"from_steps={from_steps} exceeds the process's T = {num_train_steps} training steps")
    ratio = from_steps // to_steps
    if to_steps >= from_steps or from_steps % to_steps or ratio & (ratio - 1):
        raise ValueError(f"from_steps / to_steps must be a power of two >= 2 (each round halves the steps), got "
                         f"{from_steps} / {to_steps}")
    grids = []
    steps = from_steps
    while steps >= to_steps:
        grids.append(timestep_sequence(num_train_steps, steps, GRID_SPACING).tolist())
        steps //= 2
    for teacher, student in zip(grids, grids[1:]):  # the nesting the rounds rely on (see the module docstring)
        assert teacher[::2] == student, (teacher, student)
    return grids


class StudentSteps(NamedTuple):
    """Per student step ``j`` (float64 ``[N / 2]``, ``ᾱ`` = 1 for "clean"): where it starts (``t``), the
    teacher's intermediate index ``t'`` and ``ᾱ`` at ``t``, ``t'`` and the landing point ``t''``."""

    t: torch.Tensor  # long: the student's grid
    t_mid: torch.Tensor  # long: the teacher's intermediate index t'
    alpha_bar_t: torch.Tensor
    alpha_bar_mid: torch.Tensor
    alpha_bar_end: torch.Tensor  # 1 for the last step, which lands on x0


def student_steps(teacher_grid: list[int], alpha_bar: torch.Tensor) -> StudentSteps:
    """The two-teacher-step table of a round whose teacher visits ``teacher_grid`` (even length)."""
    if len(teacher_grid) < 2 or len(teacher_grid) % 2:
        raise ValueError(f"a teacher grid must have an even number of steps >= 2, got {len(teacher_grid)}")
    values = alpha_bar.detach().to("cpu", torch.float64)
    padded = list(teacher_grid) + [None]  # None: after the last index, DDIM lands on x0 (alpha_bar = 1)

    def alpha_bars(indices) -> torch.Tensor:
        return torch.tensor([1.0 if i is None else float(values[i]) for i in indices], dtype=torch.float64)

    starts, mids, ends = padded[0:-1:2], padded[1::2], padded[2::2]
    return StudentSteps(t=torch.tensor(starts, dtype=torch.long), t_mid=torch.tensor(mids, dtype=torch.long),
                        alpha_bar_t=alpha_bars(starts), alpha_bar_mid=alpha_bars(mids), alpha_bar_end=alpha_bars(ends))


def _shaped(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example values ``[B]`` as ``[B, 1, ..., 1]`` in ``like``'s dtype and device."""
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def ddim_step(x0_hat: torch.Tensor, eps_hat: torch.Tensor, alpha_bar_next: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM to the state with ``alpha_bar_next`` (per example ``[B]``):
    ``z_s = α_s x̂ + σ_s ε̂`` (Song et al. 2021, eq. 12, η = 0)."""
    alpha_bar_next = _shaped(alpha_bar_next, x0_hat)
    return alpha_bar_next.sqrt() * x0_hat + (1.0 - alpha_bar_next).clamp(min=0).sqrt() * eps_hat


def distillation_target(z_t: torch.Tensor, z_end: torch.Tensor, alpha_bar_t: torch.Tensor,
                        alpha_bar_end: torch.Tensor) -> torch.Tensor:
    """``x̃``: the x-prediction whose one DDIM step from ``z_t`` lands on the teacher's two-step ``z_end``
    (Salimans & Ho 2022, Algorithm 2). ``alpha_bar_*`` are per example ``[B]``; ``alpha_bar_end = 1`` gives
    ``z_end`` itself."""
    alpha_t, sigma_t = _shaped(alpha_bar_t, z_t).sqrt(), (1.0 - _shaped(alpha_bar_t, z_t)).sqrt()
    alpha_end, sigma_end = _shaped(alpha_bar_end, z_t).sqrt(), (1.0 - _shaped(alpha_bar_end, z_t)).clamp(min=0).sqrt()
    ratio = sigma_end / sigma_t
    return (z_end - ratio * z_t) / (alpha_end - ratio * alpha_t)  # Salimans & Ho 2022, Algorithm 2


def truncated_snr_weight(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """``max(SNR_t, 1)`` with ``SNR_t = α_t² / σ_t²`` (Salimans & Ho 2022, sec. 4, "truncated SNR")."""
    return (alpha_bar_t / (1.0 - alpha_bar_t)).clamp(min=1.0)
