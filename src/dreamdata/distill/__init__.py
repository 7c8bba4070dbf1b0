"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion
Models"): a trained Gaussian run's many-step DDIM sampler, halved round by round into a 1-4-step student.

Round ``r``: the teacher samples with deterministic DDIM on an ``N_r``-step grid; the student, initialised
as the teacher, learns to do two teacher steps ``t → t' → t''`` in one ``t → t''``, by regressing its x-space
prediction on the closed-form target of their Algorithm 2 with the "truncated SNR" weight ``max(SNR_t, 1)``
(sec. 4; the formulas are in :mod:`~dreamdata.distill.target`). Then the student becomes the teacher and
``N`` halves. Training states are ``x_t = q_sample(x0, t)`` of real training images at ``t`` on the student's
``N_r / 2``-step grid.

Why progressive rather than consistency distillation (Song et al. 2023): the target is the teacher's own
deterministic DDIM, so a round is a plain regression with a closed-form target - no extra metric network
(consistency models use LPIPS for images), no target network EMA schedule, no ODE-solver choice - and on
the analytic Gaussian toy, where the teacher and its DDIM steps are affine, the target is exactly
representable, so the tests can check the student against the teacher's many-step output directly. Each
round is also well-conditioned at small CPU budgets: the student starts at the teacher and only has to
learn a jump twice as long.

Choices (stated where the paper leaves room or the toolkit differs):

* **Parameterisation**: the student keeps the teacher's (epsilon, x0 or v;
  :meth:`~dreamdata.process.gaussian.GaussianDiffusion.predict_x0_and_eps` turns it into ``x̂``), so it can
  start from the teacher's weights. The paper distils v-prediction models for stability: with epsilon the
  x-space error at the noisiest step is ``σ_t / α_t`` times the epsilon error (156x at ``t = T - 1`` of the
  linear schedule), so epsilon teachers distil to few steps less well; train the teacher with
  ``process.prediction=v`` when distillation is planned.
* **Grid**: Lin et al.'s ``trailing`` grid, the only one of ours that nests under halving and starts at
  ``T - 1`` (see :mod:`~dreamdata.distill.target`).
* **Guidance**: with ``--guidance w`` the teacher's output is the guided ``ε̃ = (1 + w) ε(x, c) - w ε(x)``
  (Ho & Salimans 2022) and the student, conditioned on the same class, learns the guided sampler: the
  guidance is baked in, and the student is sampled with ``w = 0`` (its null-class output was never trained
  to be an unconditional model). The teacher's ``x̂`` is clipped as the samplers clip it (``static`` by
  default), so the student reproduces what ``dreamdata sample TEACHER --sampler ddim --spacing trailing``
  would draw.
* **Optimisation**: the run's optimizer (Adam/AdamW, its betas and gradient clipping) at the run's learning
  rate, annealed linearly to 0 within each round, and no EMA of the student (see
  :mod:`~dreamdata.distill.round`).
* **Sampling a distilled run** is pinned to its sampler: each checkpoint records DDIM, its step count, its
  grid and the baked-in guidance (:mod:`~dreamdata.distill.record`), which become the defaults of
  ``sample``, ``evaluate``, ``dream``, ``interpolate`` and the sweep; asking for another sampler, step
  count, spacing, eta or guidance is an error (:func:`dreamdata.sampling.from_run.distilled_sampling`).

Modules: :mod:`~dreamdata.distill.target` (the maths), :mod:`~dreamdata.distill.objective` (one batch's
loss), :mod:`~dreamdata.distill.round` (one round's updates), :mod:`~dreamdata.distill.plan` (options and
``distill.json``), :mod:`~dreamdata.distill.run` (the run directory, checkpoints and resume),
:mod:`~dreamdata.distill.record` (what a distilled checkpoint promises).
"""

from dreamdata.distill.record import DistilledSampler, read_distilled

__all__ = ["DistilledSampler", "read_distilled"]
