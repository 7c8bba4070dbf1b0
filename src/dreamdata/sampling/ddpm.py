"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), optionally respaced and classifier-free guided.

A stateless function: everything it needs comes in as arguments, and the only randomness is the noise
added after each step, drawn from ``generator``. At each chosen timestep the network's output (of whatever
parameterisation the process was trained with) is turned into ``x0_hat``; the next state is drawn from the
posterior ``q(x_{t-1} | x_t, x0_hat)`` of the (possibly respaced) chain, and the last step returns
``x0_hat`` (the posterior of the clean image is a point mass there).

The step's variance is the process's own by default: ``beta_tilde`` (``fixed_small``), ``beta``
(``fixed_large``) or, for ``learned_range``, the network's interpolation between the *respaced* chain's
``beta'`` and ``beta_tilde'`` (Nichol & Dhariwal 2021, eq. 15 and sec. 4), which at every step ``T`` is the
training chain's.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from dreamdata.process.base import Network
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import GeneratorLike, randn_like
from dreamdata.process.variance import learned_range_log_variance
from dreamdata.sampling.common import Callback, initial_state, predict, prepare_sampling
from dreamdata.sampling.guidance import guided_output
from dreamdata.sampling.timesteps import respaced_posterior

__all__ = ["ddpm_sample", "guided_output", "VARIANCES"]

VARIANCES = ("beta_tilde", "beta", "learned")
_PROCESS_VARIANCE = {"fixed_small": "beta_tilde", "fixed_large": "beta", "learned_range": "learned"}


@torch.no_grad()
def ddpm_sample(network: Network, process: GaussianDiffusion, noise: torch.Tensor,
                timesteps: Optional[torch.Tensor | Sequence[int]] = None,
                class_labels: Optional[torch.Tensor] = None, guidance_scale: float = 0.0,
                generator: GeneratorLike = None, x0_clip: str = "static", progress: bool = False,
                callback: Optional[Callback] = None, null_class: Optional[int] = None, *,
                guidance_interval: Optional[Sequence[float]] = None, variance: Optional[str] = None
                ) -> torch.Tensor:
    """Run the ancestral reverse chain from ``noise`` (``x_T``, ``[B, C, H, W]``) and return the samples ``x_0``.

    Args:
        network: called as ``network(x_t, t, class_labels)``; left in whatever train/eval mode it is in.
        process: the Gaussian diffusion the network was trained with (its schedule and parameterisation).
        noise: the starting state ``x_{timesteps[0]}``; normally standard normal noise of the output shape,
            which matches the training marginal when the first step is ``T - 1``.
        timesteps: strictly descending training indices to visit, e.g. from
            :func:`~dreamdata.sampling.timesteps.timestep_sequence`; ``None`` = all ``T-1 .. 0``. A subset
            is sampled with the respaced chain's betas ``1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}}``
            (Nichol & Dhariwal 2021, sec. 4).
        class_labels: long ``[B]`` or ``None`` (unconditional).
        guidance_scale: classifier-free guidance weight ``w`` (Ho & Salimans 2022); needs ``class_labels``
            and a null class.
        generator: source of the per-step noise - a ``torch.Generator`` on ``noise``'s device, a
            :class:`~dreamdata.process.rng.PerSampleGenerator`, or ``None`` (torch's global RNG).
        x0_clip: ``"none"``, ``"static"`` (clamp ``x0_hat`` to ``[-1, 1]``) or ``"dynamic"`` (Imagen's
            dynamic thresholding), see :mod:`~dreamdata.sampling.thresholding`.
        progress: show a tqdm progress bar.
        callback: ``callback(i, t, x_t, x0_hat)`` after each step (see
            :data:`~dreamdata.sampling.common.Callback`), e.g. to record the reverse trajectory.
        null_class: label of the unconditional (null) class for guidance; ``None`` =
            ``getattr(network, "null_class", None)``.
        guidance_interval: ``(σ_lo, σ_hi)``: apply ``guidance_scale`` only at the steps whose EDM noise level
            ``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)`` satisfies ``σ_lo < σ_t ≤ σ_hi`` (Kynkäänniemi et al. 2024) and
            take the conditional output, one network pass, elsewhere; ``None`` = guidance at every step
            (see :mod:`~dreamdata.sampling.guidance`).
        variance: reverse-step variance, ``"beta_tilde"`` (posterior variance, Ho et al. eq. 7), ``"beta"``
            (Ho et al. sec. 3.2 discuss both) or ``"learned"`` (a ``learned_range`` network's, Nichol &
            Dhariwal 2021, eq. 15); ``None`` = the process's (``process.variance``).

    Returns a tensor with ``noise``'s shape, dtype and device (half-precision noise is carried in float32
    during sampling). Runs under ``torch.no_grad`` (not ``inference_mode``, so the samples can later be fed
    into training).
    """
    if variance is None:
        variance = _PROCESS_VARIANCE[process.variance]
    if variance not in VARIANCES:
        raise ValueError(f"unknown reverse variance {variance!r} (known: {', '.join(VARIANCES)})")
    if variance == "learned" and not process.learned_variance:
        raise ValueError(f"variance 'learned' needs a learned_range process, not {process.variance!r}")
    setup = prepare_sampling(network, process, noise, timesteps, class_labels, guidance_scale, generator,
                             x0_clip, null_class, guidance_interval)

    # The respaced chain's posterior in float64, from alpha_bar directly (a long jump's beta' may round to 1),
    # indexed in ascending step order j (j = 0 is the last, least noisy step).
    chain = respaced_posterior(process.schedule.alpha_bar, torch.tensor(setup.steps))
    coef_x0 = chain.posterior_mean_coef_x0.tolist()
    coef_xt = chain.posterior_mean_coef_xt.tolist()
    step_variance = (chain.posterior_variance if variance == "beta_tilde" else chain.betas).tolist()
    log_beta, log_beta_tilde = chain.betas.log().tolist(), chain.posterior_log_variance_clipped.tolist()

    x = initial_state(noise)
    count = len(setup.steps)
    for i, tau in enumerate(tqdm(setup.steps, desc="ddpm", disable=not progress, leave=False)):
        j = count - 1 - i
        prediction = predict(network, process, x, tau, setup, setup.guidance_scales[i], x0_clip)
        x0_hat = prediction.x0
        if j > 0:
            mean = coef_x0[j] * x0_hat + coef_xt[j] * x  # Ho et al. 2020, eq. 7 (posterior mean at x0_hat)
            if variance == "learned":  # Nichol & Dhariwal 2021, eq. 15 on the respaced chain's beta', beta_tilde'
                log_variance = learned_range_log_variance(prediction.variance.to(mean.dtype), log_beta[j],
                                                          log_beta_tilde[j])
                x_next = mean + torch.exp(0.5 * log_variance) * randn_like(mean, generator)  # Alg. 2, line 4
            else:
                x_next = mean + math.sqrt(step_variance[j]) * randn_like(mean, generator)  # Ho et al., Alg. 2, line 4
        else:
            x_next = x0_hat  # Ho et al. 2020, Alg. 2: no noise at the last step; eq. 7 at t = 1 is x0_hat itself
        if callback is not None:
            callback(i, tau, x, x0_hat)
        x = x_next
    return x.to(noise.dtype)
