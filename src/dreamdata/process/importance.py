"""Importance sampling of the timestep for the variational bound (Nichol & Dhariwal 2021, sec. 3.3).

``L_vlb = E_t[L_t / p_t]`` with ``p_t ∝ sqrt(E[L_t^2])`` (their eq. 18): the terms of the bound differ by
orders of magnitude (the first few dominate), so drawing ``t`` uniformly gives a noisy gradient. ``E[L_t^2]``
is estimated from the last :data:`HISTORY` values of ``L_t`` seen for each ``t``; until every ``t`` has that
many, ``t`` stays uniform (their sec. 3.3). As in their code, a little of the uniform distribution is mixed
back in (:data:`UNIFORM_PROBABILITY`) so no ``t`` is starved and the weights ``1 / (T p_t)`` stay bounded.

The history changes during training, so it is part of the training state: :meth:`state_dict` /
:meth:`load_state_dict` go into every checkpoint, and an exact resume continues with the same ``p_t``.
"""

from __future__ import annotations

from typing import Optional

import torch

from dreamdata.process.rng import check_generator, randint

__all__ = ["HISTORY", "LossSecondMomentSampler", "UNIFORM_PROBABILITY"]

HISTORY = 10  # values of L_t kept per t (Nichol & Dhariwal 2021, sec. 3.3)
UNIFORM_PROBABILITY = 0.001  # share of the uniform distribution mixed into p_t (improved-diffusion's code)


class LossSecondMomentSampler:
    """Draws ``t`` with ``p_t ∝ sqrt(mean of the last HISTORY values of L_t^2)``, uniform until warmed up."""

    def __init__(self, num_steps: int, history: int = HISTORY, uniform_probability: float = UNIFORM_PROBABILITY):
        if num_steps < 1 or history < 1 or not 0.0 <= uniform_probability <= 1.0:
            raise ValueError(f"need num_steps >= 1, history >= 1 and 0 <= uniform_probability <= 1, got "
                             f"{num_steps}, {history}, {uniform_probability}")
        self.num_steps = int(num_steps)
        self.uniform_probability = float(uniform_probability)
        self.history = torch.zeros(self.num_steps, int(history), dtype=torch.float64)  # oldest first
        self.counts = torch.zeros(self.num_steps, dtype=torch.long)

    def __repr__(self) -> str:
        return (f"LossSecondMomentSampler(num_steps={self.num_steps}, history={self.history.shape[1]}, "
                f"warmed_up={self.warmed_up()})")

    def warmed_up(self) -> bool:
        """Whether every ``t`` has a full history (before that, ``t`` is uniform)."""
        return bool((self.counts == self.history.shape[1]).all())

    def probabilities(self) -> torch.Tensor:
        """``p_t`` (float64 ``[T]``, sums to 1): uniform before warm-up, else ``∝ sqrt(E[L_t^2])`` (eq. 18)."""
        if not self.warmed_up():
            return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        weights = self.history.pow(2).mean(dim=1).sqrt()  # Nichol & Dhariwal 2021, eq. 18 (sqrt(E[L_t^2]))
        if not float(weights.sum()) > 0:  # every recorded L_t is 0: nothing to prefer
            return torch.full((self.num_steps,), 1.0 / self.num_steps, dtype=torch.float64)
        weights = weights / weights.sum()
        return weights * (1.0 - self.uniform_probability) + self.uniform_probability / self.num_steps

    def sample(self, batch_size: int, device: torch.device | str, generator: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t, weights)``: long ``[B]`` timesteps from ``p`` and the float32 importance weights ``1 / (T p_t)``.

        Before warm-up this is exactly the uniform draw of
        :meth:`~dreamdata.process.gaussian.GaussianDiffusion.sample_timesteps` (the same numbers from the
        same generator), with weights 1.
        """
        if not self.warmed_up():
            return randint(self.num_steps, batch_size, device, generator), torch.ones(batch_size, device=device)
        check_generator(generator, device)
        p = self.probabilities()
        t = torch.multinomial(p.to(device=device, dtype=torch.float32), batch_size, replacement=True,
                              generator=generator)
        weights = (1.0 / (self.num_steps * p)).to(device=device, dtype=torch.float32)[t]  # E_p[w L_t] = mean_t L_t
        return t, weights

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record one ``L_t`` per example (``t`` long ``[B]``, ``losses`` ``[B]``, finite), in batch order."""
        for step, value in zip(t.detach().cpu().tolist(), losses.detach().double().cpu().tolist()):
            count = int(self.counts[step])
            if count == self.history.shape[1]:
                self.history[step, :-1] = self.history[step, 1:].clone()  # drop the oldest
                self.history[step, -1] = value
            else:
                self.history[step, count] = value
                self.counts[step] = count + 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"history": self.history.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        history, counts = state["history"], state["counts"]
        if tuple(history.shape) != tuple(self.history.shape) or tuple(counts.shape) != tuple(self.counts.shape):
            raise ValueError(f"timestep-sampler state for {tuple(history.shape)} (T, history) does not fit "
                             f"{tuple(self.history.shape)}")
        self.history = history.to(dtype=torch.float64, device="cpu").clone()
        self.counts = counts.to(dtype=torch.long, device="cpu").clone()
