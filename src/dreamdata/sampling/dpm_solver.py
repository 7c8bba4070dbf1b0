"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", Algorithm 2): a second-order multistep solver of the probability-flow ODE, and its
SDE variant (``eta > 0``, registered as ``dpm++2m-sde``).

The ODE is solved in its data-prediction form, in ``lambda = log(alpha / sigma)`` (half the log-SNR), with
``alpha = sqrt(alpha_bar)`` and ``sigma = sqrt(1 - alpha_bar)``. The linear part is integrated exactly;
the network's ``x0_hat`` along the way is approximated by a line through the current and the previous
prediction (one network call per step: "multistep"). Its global error is ``O(h^2)`` in the step size
``h`` in ``lambda``, against DDIM's ``O(h)``, so 20 steps do about as well as DDIM's 50-100 (measured on
Gaussian and mixture data in ``tests/test_samplers.py``). Data prediction (rather than noise prediction)
keeps the steps stable under large guidance weights and clipping (Lu et al. 2022, their main point).

Each visited timestep gets one network call. The first step is first-order (there is no previous
prediction yet: DPM-Solver++(1), which is DDIM with ``eta = 0``), and so is the last one, from the last
visited index to the clean image (``sigma = 0``, ``lambda = +inf``): it lands exactly on ``x0_hat``. With
``lower_order_final`` (the default) and fewer than 15 timesteps the step *into* the last visited index is
first-order too, as in Lu et al.'s reference code ("lower_order_final"): with few steps that step spans a
large ``lambda`` interval, where extrapolating the previous prediction is unreliable.

For the same reason any step more than twice as long in ``lambda`` as the one before it (``r < 1/2``) is
taken with first order: the line through the last two predictions would be extrapolated far beyond the
interval it was fitted on (variable-step multistep methods are only well behaved for bounded step
ratios). On the usual grids this happens exactly once, on the step into index 0 of grids that end there
("linspace", "leading"): ``lambda`` at index 0 is far out (4.6 for the linear schedule, with ``r`` about
0.2-0.3), and taken with second order that one step over-disperses Gaussian test data by tens of percent
at 15-50 steps.

SDE-DPM-Solver++(2M) (Lu et al. 2022, sec. 5 and their reference code; k-diffusion's ``dpmpp_2m_sde``,
midpoint form) solves the reverse SDE instead, with the same data prediction and multistep correction. Written
for the variance-preserving ``x = alpha x0 + sigma eps``, a step from ``(alpha, sigma, lambda)`` to
``(alpha', sigma', lambda')`` with ``h = lambda' - lambda`` is::

    x' = (sigma' / sigma) e^(-eta h) x + alpha' (1 - e^(-(1 + eta) h)) D + sigma' sqrt(1 - e^(-2 eta h)) z

with ``D`` the first- or second-order data prediction above (the same step-order rules) and ``z ~ N(0, I)``.
At ``eta = 0`` it is the ODE step. At ``eta = 1`` and first order it is exactly the ancestral DDPM step with
``sigma^2 = beta_tilde`` (Ho et al. 2020, eq. 7, between the two visited timesteps): the coefficient of ``x`` is
``alpha_{t|s} sigma_s^2 / sigma_t^2``, that of ``x0_hat`` is ``alpha_s (1 - e^(-2h))`` and the variance
``sigma_s^2 (1 - e^(-2h))``. Fresh noise at every step washes out errors of an imperfect network that a
deterministic solver carries to the end: on an under-trained Fashion-MNIST model, ancestral sampling reached
FID 41.7 where every ODE solver stopped at 76 (BENCHMARKS.md, steps per sampler).

``eta`` above 1 is allowed: the step keeps the marginals for any ``eta >= 0``. With ``x = alpha x0 + sigma eps``
and ``D = x0``, ``(sigma' / sigma) alpha = alpha' e^(-h)``, so the mean is ``alpha' x0`` and the variance
``sigma'^2 e^(-2 eta h) + sigma'^2 (1 - e^(-2 eta h)) = sigma'^2``; a larger ``eta`` only takes a larger share of
the state from fresh noise, like the extra noise of Karras et al. 2022's stochastic sampler (``S_churn``).

DPM-Solver++(3M) (Lu et al. 2022, the third-order multistep solver of their reference code; diffusers'
``multistep_dpm_solver_third_order_update``) fits a parabola through the last three predictions instead of a
line. With ``r0 = h_{i-1} / h`` and ``r1 = h_{i-2} / h`` the divided differences are::

    D1_0 = (x0_i - x0_{i-1}) / r0,   D1_1 = (x0_{i-1} - x0_{i-2}) / r1
    D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),   D2 = (D1_0 - D1_1) / (r0 + r1)

and, with ``g = (1 + eta) h`` (the exponent of the data term above; ``g = h`` for the ODE), the step is::

    x' = [the first-order step above, D = x0_i] + alpha' (phi_2 D1 - phi_3 D2),
    phi_2 = (e^(-g) - 1) / g + 1,   phi_3 = phi_2 / g - 1/2

the exponential integrator's phi-functions (Lu et al. 2022, eq. 12's Taylor terms, integrated exactly). The
SDE form with ``g = (1 + eta) h`` is k-diffusion's ``dpmpp_3m_sde``. Its global error on the ODE is
``O(h^3)``. The order is lowered where the history is too short or the steps too uneven, as above: third order
needs two earlier predictions and both ratios at least :data:`MIN_STEP_RATIO`, otherwise the step is the
(2M) step; and with fewer than :data:`LOWER_ORDER_FINAL_BELOW` timesteps the step into the last visited index
is first order and the one before it at most second order (diffusers' ``lower_order_final``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from dreamdata.process.base import Network
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import GeneratorLike, randn_like
from dreamdata.sampling.common import Callback, initial_state, predict_x0_eps, prepare_sampling

__all__ = ["dpm_solver_pp_2m_sample", "LOWER_ORDER_FINAL_BELOW", "MIN_STEP_RATIO"]

LOWER_ORDER_FINAL_BELOW = 15  # as diffusers' DPMSolverMultistepScheduler; Lu et al.'s reference code uses 10 or 15
MIN_STEP_RATIO = 0.5  # second order only when h_{i-1} / h_i >= 1/2 (see the module docstring)


@torch.no_grad()
def dpm_solver_pp_2m_sample(network: Network, process: GaussianDiffusion, noise: torch.Tensor,
                            timesteps: Optional[torch.Tensor | Sequence[int]] = None,
                            class_labels: Optional[torch.Tensor] = None, guidance_scale: float = 0.0,
                            generator: GeneratorLike = None, x0_clip: str = "static", progress: bool = False,
                            callback: Optional[Callback] = None, null_class: Optional[int] = None, *,
                            guidance_interval: Optional[Sequence[float]] = None,
                            lower_order_final: bool = True, eta: float = 0.0, order: int = 2) -> torch.Tensor:
    """Solve the probability-flow ODE (``eta = 0``) or the reverse SDE (``eta > 0``) from ``noise`` (the state at
    ``timesteps[0]``) with DPM-Solver++(2M), or with DPM-Solver++(3M) at ``order = 3``.

    The shared arguments (and ``guidance_interval``) are those of
    :func:`~dreamdata.sampling.ddpm.ddpm_sample`. At ``eta = 0`` the solver is deterministic and ``generator`` is
    never drawn from; with ``eta > 0`` each step but the last draws its noise from it (one draw per step, as
    the ancestral sampler). ``eta >= 0``: how much of the step's noise is fresh (0: the ODE, 1: the SDE, above 1:
    more fresh noise than the SDE, the module docstring's marginals argument).
    ``lower_order_final``: with fewer than :data:`LOWER_ORDER_FINAL_BELOW` timesteps, take the step into
    the last visited index with first order (see the module docstring). Steps with a step-size ratio
    ``r < MIN_STEP_RATIO`` are first order regardless (third order: see the module docstring).
    """
    if not 0.0 <= eta < math.inf:
        raise ValueError(f"eta: expected a finite value >= 0, got {eta}")
    if order not in (2, 3):
        raise ValueError(f"order: expected 2 or 3, got {order}")
    setup = prepare_sampling(network, process, noise, timesteps, class_labels, guidance_scale, generator,
                             x0_clip, null_class, guidance_interval)
    steps = setup.steps
    alpha_bar = process.schedule.alpha_bar.tolist()  # float64 values
    alpha = [math.sqrt(alpha_bar[s]) for s in steps] + [1.0]  # appended: the clean image, sigma = 0
    sigma = [math.sqrt(1.0 - alpha_bar[s]) for s in steps] + [0.0]
    lam = [0.5 * (math.log(alpha_bar[s]) - math.log1p(-alpha_bar[s])) for s in steps]  # lambda = log(alpha / sigma)
    first_order_into_last = lower_order_final and len(steps) < LOWER_ORDER_FINAL_BELOW

    x = initial_state(noise)
    previous_x0: Optional[torch.Tensor] = None
    before_previous_x0: Optional[torch.Tensor] = None
    name = f"dpm++{order}m" + ("-sde" if eta else "")
    for i, tau in enumerate(tqdm(steps, desc=name, disable=not progress, leave=False)):
        x0_hat, _ = predict_x0_eps(network, process, x, tau, setup, setup.guidance_scales[i], x0_clip)
        if i == len(steps) - 1:
            x_next = x0_hat  # Lu et al. 2022, Alg. 2 first-order update with sigma_next = 0, alpha_next = 1
        else:
            h = lam[i + 1] - lam[i]  # Lu et al. 2022, Alg. 2 (h_i = lambda_{t_i} - lambda_{t_{i-1}})
            r = (lam[i] - lam[i - 1]) / h if i > 0 else 0.0  # Lu et al. 2022, Alg. 2 (r_i = h_{i-1} / h_i)
            r1 = (lam[i - 1] - lam[i - 2]) / h if i > 1 else 0.0  # h_{i-2} / h_i
            lowered = first_order_into_last and i == len(steps) - 2
            third = (order == 3 and before_previous_x0 is not None and min(r, r1 / r if r else 0.0) >= MIN_STEP_RATIO
                     and not lowered and not (first_order_into_last and i == len(steps) - 3))
            if third or previous_x0 is None or r < MIN_STEP_RATIO or lowered:
                # Lu et al. 2022, Alg. 2, first step (first-order update, DPM-Solver++(1)); with `third` the
                # first-order part, the parabola's terms are added below
                d = x0_hat
            else:
                d = (1.0 + 0.5 / r) * x0_hat - (0.5 / r) * previous_x0  # Lu et al. 2022, Alg. 2 (D_i)
            g = (1.0 + eta) * h  # the data term's exponent: h for the ODE
            x_next = (sigma[i + 1] / sigma[i]) * math.exp(-eta * h) * x - alpha[i + 1] * math.expm1(-g) * d
            if third:  # DPM-Solver++(3M), the module docstring's step
                d1_0 = (x0_hat - previous_x0) / r
                d1_1 = (previous_x0 - before_previous_x0) / r1
                d1 = d1_0 + (r / (r + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r + r1)
                phi_2 = math.expm1(-g) / g + 1.0
                phi_3 = phi_2 / g - 0.5
                x_next = x_next + alpha[i + 1] * (phi_2 * d1 - phi_3 * d2)
            if eta:  # SDE-DPM-Solver++, the module docstring's step
                x_next = x_next + sigma[i + 1] * math.sqrt(-math.expm1(-2.0 * eta * h)) * randn_like(x, generator)
        if callback is not None:
            callback(i, tau, x, x0_hat)
        before_previous_x0, previous_x0 = previous_x0, x0_hat
        x = x_next
    return x.to(noise.dtype)
