"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), optionally respaced and classifier-free guided.

A stateless function: everything it needs comes in as arguments, and the only randomness is the noise
added after each step, drawn from ``generator``. At each chosen timestep the network's output (of whatever
parameterisation the process was trained with) is turned into ``x0_hat``; the next state is drawn from the
posterior ``q(x_{t-1} | x_t, x0_hat)`` of the (possibly respaced) chain, and the last step returns its mean.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from dreamdata.process.base import Network
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import check_generator, randn_like
from dreamdata.process.schedules import derive_schedule
from dreamdata.sampling.timesteps import check_timesteps, respaced_betas

__all__ = ["ddpm_sample", "guided_output", "VARIANCES"]

VARIANCES = ("beta_tilde", "beta")


def guided_output(network: Network, x: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor],
                  guidance_scale: float, null_class: Optional[int]) -> torch.Tensor:
    """``network``'s output at ``(x, t)``, with classifier-free guidance when ``guidance_scale != 0``.

    Guided: ``(1 + w) * out(x, c) - w * out(x, null)`` (Ho & Salimans 2022, eq. 6), with the conditional
    and unconditional halves in one batched forward pass. The formula is written for epsilon, but because
    every parameterisation is an affine function of epsilon at fixed ``(x, t)`` and the weights sum to 1,
    combining raw x0 or v outputs gives exactly the same guided epsilon. ``w = 0`` is a plain conditional
    pass (no doubled batch).
    """
    if guidance_scale == 0:
        return network(x, t, class_labels)
    null_labels = torch.full_like(class_labels, null_class)
    both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([class_labels, null_labels]))
    conditional, unconditional = both.chunk(2)
    return (1.0 + guidance_scale) * conditional - guidance_scale * unconditional  # Ho & Salimans 2022, eq. 6


@torch.no_grad()
def ddpm_sample(network: Network, process: GaussianDiffusion, noise: torch.Tensor,
                timesteps: Optional[torch.Tensor | Sequence[int]] = None,
                class_labels: Optional[torch.Tensor] = None, guidance_scale: float = 0.0,
                generator: Optional[torch.Generator] = None, variance: str = "beta_tilde",
                clip_x0: bool = True, progress: bool = False,
                null_class: Optional[int] = None) -> torch.Tensor:
    """Run the reverse chain from ``noise`` (``x_T``, ``[B, C, H, W]``) and return the samples ``x_0``.

    Args:
        network: called as ``network(x_t, t, class_labels)``; left in whatever train/eval mode it is in.
        process: the Gaussian diffusion the network was trained with (its schedule and parameterisation).
        noise: the starting state ``x_{timesteps[0]}``; normally ``torch.randn`` of the output shape, which
            matches the training marginal when the first step is ``T - 1``.
        timesteps: strictly descending training indices to visit, e.g. from
            :func:`~dreamdata.sampling.timesteps.timestep_sequence`; ``None`` = all ``T-1 .. 0``. A subset
            is sampled with the respaced chain's betas ``1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}}``
            (Nichol & Dhariwal 2021, sec. 4).
        class_labels: long ``[B]`` or ``None`` (unconditional).
        guidance_scale: classifier-free guidance weight ``w`` (Ho & Salimans 2022); needs ``class_labels``
            and a null class.
        generator: source of the per-step noise (must live on ``noise``'s device); ``None`` = global RNG.
        variance: reverse-step variance, ``"beta_tilde"`` (posterior variance, Ho et al. eq. 7) or
            ``"beta"`` (Ho et al. sec. 3.2 discuss both).
        clip_x0: clip ``x0_hat`` to ``[-1, 1]`` before forming the posterior mean.
        progress: show a tqdm progress bar.
        null_class: label of the unconditional (null) class for guidance; ``None`` =
            ``getattr(network, "null_class", None)``.

    Runs under ``torch.no_grad`` (not ``inference_mode``, so the samples can later be fed into training).
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown reverse variance {variance!r} (known: {', '.join(VARIANCES)})")
    steps = check_timesteps(torch.arange(process.num_steps - 1, -1, -1) if timesteps is None else timesteps,
                            process.num_steps)
    device = noise.device
    check_generator(generator, device)
    if class_labels is not None:
        class_labels = class_labels.to(device)
    if guidance_scale != 0:
        if null_class is None:
            null_class = getattr(network, "null_class", None)
        if class_labels is None or null_class is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs class_labels and a null class "
                             f"(got class_labels={'None' if class_labels is None else 'a tensor'}, "
                             f"null_class={null_class!r})")

    # The respaced chain in float64, indexed in ascending step order j (j = 0 is the last, least noisy step).
    chain = derive_schedule(respaced_betas(process.schedule.alpha_bar, steps))
    coef_x0 = chain.posterior_mean_coef_x0.tolist()
    coef_xt = chain.posterior_mean_coef_xt.tolist()
    step_variance = (chain.posterior_variance if variance == "beta_tilde" else chain.betas).tolist()

    x = noise
    batch = x.shape[0]
    count = steps.numel()
    for i, tau in enumerate(tqdm(steps.tolist(), desc="ddpm", disable=not progress, leave=False)):
        j = count - 1 - i
        t = torch.full((batch,), tau, device=device, dtype=torch.long)
        output = guided_output(network, x, t, class_labels, guidance_scale, null_class)
        if output.shape != x.shape:
            raise ValueError(f"network output has shape {tuple(output.shape)}, expected {tuple(x.shape)}")
        x0_hat, _ = process.predict_x0_and_eps(output, x, t)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        mean = coef_x0[j] * x0_hat + coef_xt[j] * x  # Ho et al. 2020, eq. 7 (posterior mean at x0_hat)
        if j > 0:
            x = mean + math.sqrt(step_variance[j]) * randn_like(mean, generator)  # Ho et al. 2020, Alg. 2, line 4
        else:
            x = mean  # Ho et al. 2020, Alg. 2: no noise at the final step
    return x
