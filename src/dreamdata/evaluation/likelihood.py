"""Negative log-likelihood bound in bits/dim: the variational bound of a Gaussian diffusion on test images.

Per image, ``-log p_theta(x_0) <= L_vlb = L_T + sum_{t=1}^{T-1} L_t + L_0`` (Ho et al. 2020, eq. 5; Nichol &
Dhariwal 2021, eq. 4-7; the terms are :meth:`~dreamdata.process.gaussian.GaussianDiffusion.prior_kl` and
:meth:`~dreamdata.process.gaussian.GaussianDiffusion.vlb_term`), each in bits per dimension, i.e. nats
divided by ``D ln 2`` with ``D = C H W``. Every ``L_t`` is a closed-form KL given ``x_t``, and ``x_t ~ q(x_t |
x_0)`` is drawn once per image and term (as improved-diffusion's ``calc_bpd_loop``), so the bound is exact
in expectation and its standard error over images covers that draw.

A model with a fixed variance is scored with that variance (:mod:`dreamdata.process.variance`), so
``fixed_small``, ``fixed_large`` and ``learned_range`` runs are compared on one scale.

Strided estimate (``nll_steps = K < T - 1``): the ``T - 1`` KL terms are evaluated at the midpoints of
``K`` equal strata of ``1 .. T-1`` and their sum scaled by ``(T - 1) / K``; ``L_T`` and the decoder ``L_0``
(usually the largest term) are always exact. It is an *estimate* of the bound, not a bound: the terms vary
by orders of magnitude over ``t``, most steeply near 0, so a coarse grid can miss either way.

The noise of image ``k`` comes from its own seeded stream (:class:`~dreamdata.process.rng.PerSampleGenerator`),
so the figures depend on ``(seed, k)`` only, not on the batch size, and never touch torch's global RNG.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from dreamdata.process.rng import GeneratorLike, PerSampleGenerator, randn_like
from dreamdata.sampling.thresholding import clip_x0

__all__ = ["VLBTerms", "nll_bits_per_dim", "nll_folder_name", "nll_timesteps", "vlb_terms"]


class VLBTerms(NamedTuple):
    """The bound's terms for a batch of images, each in bits/dim."""

    prior: torch.Tensor  # L_T per image [B]
    kl: torch.Tensor  # L_t per image at each evaluated t >= 1 [B, K]
    decoder: torch.Tensor  # L_0 per image [B]


def nll_folder_name(nll_steps: Optional[int], num_steps: int, n: int, seed: int, step: int) -> str:
    """The folder under ``RUN/eval/`` that holds the bound of checkpoint ``step`` for these settings: one
    name for ``evaluate --nll`` and the sweep's ``nll`` metric, so each finds the other's result."""
    strided = nll_steps is not None and nll_steps < num_steps - 1
    return f"nll-{f'{nll_steps}steps' if strided else 'allsteps'}-n{n}-seed{seed}-step{step}"


def nll_timesteps(num_steps: int, nll_steps: Optional[int] = None) -> torch.Tensor:
    """The indices ``t >= 1`` whose KL terms are evaluated: all of ``1 .. T-1``, or with ``nll_steps = K <
    T - 1`` the midpoints ``1 + floor((k + 1/2) (T - 1) / K)`` of ``K`` equal strata (ascending, distinct)."""
    if nll_steps is not None and (isinstance(nll_steps, bool) or not isinstance(nll_steps, int) or nll_steps < 1):
        raise ValueError(f"nll_steps must be a positive integer, got {nll_steps!r}")
    count = num_steps - 1
    if nll_steps is None or nll_steps >= count:
        return torch.arange(1, num_steps, dtype=torch.long)
    k = torch.arange(nll_steps, dtype=torch.float64)
    return 1 + torch.floor((k + 0.5) * count / nll_steps).long()


@torch.no_grad()
def vlb_terms(network, process, x0: torch.Tensor, class_labels: Optional[torch.Tensor], timesteps: torch.Tensor,
              generator: GeneratorLike = None, x0_clip: str = "static", discretized: bool = True) -> VLBTerms:
    """``L_T``, ``L_t`` at each of ``timesteps`` (all >= 1) and ``L_0`` of ``network`` for clean images ``x0``.

    ``x0`` is in ``[-1, 1]`` (float; float64 keeps the whole computation in float64). For each term a fresh
    ``x_t ~ q(x_t | x_0)`` is drawn from ``generator`` (the decoder's ``x_1`` after the KL terms). ``x0_clip``
    clips ``x0_hat`` as the samplers do (``"static"`` by default: the bound of the model as sampled, as
    improved-diffusion's ``image_nll.py``); ``discretized=False`` scores ``L_0`` with the continuous density.
    """
    timesteps = torch.as_tensor(timesteps, dtype=torch.long).flatten()
    if timesteps.numel() and int(timesteps.min()) < 1:
        raise ValueError("vlb_terms evaluates the KL terms at t >= 1; L_0 is always included")

    def term(t: int) -> torch.Tensor:
        t_batch = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
        x_t = process.q_sample(x0, t_batch, randn_like(x0, generator))
        output = network(process.network_input(x_t, t_batch), t_batch, class_labels)
        prediction, variance_output = process.split_output(output, x0)
        prediction = prediction.to(x0.dtype)
        variance_output = None if variance_output is None else variance_output.to(x0.dtype)
        x0_hat, _ = process.predict_x0_and_eps(prediction, x_t, t_batch)
        if x0_clip != "none":
            x0_hat = clip_x0(x0_hat, x0_clip)
        log_variance = process.log_variance(t_batch, x_t, variance_output)
        return process.vlb_term(x0, x_t, t_batch, x0_hat, log_variance, discretized=discretized)

    kl = [term(int(t)) for t in timesteps]
    kl_terms = torch.stack(kl, dim=1) if kl else x0.new_zeros((x0.shape[0], 0))
    return VLBTerms(prior=process.prior_kl(x0), kl=kl_terms, decoder=term(0))


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    stderr = float(values.std(unbiased=True) / math.sqrt(values.numel())) if values.numel() > 1 else float("nan")
    return float(values.mean()), stderr


@torch.no_grad()
def nll_bits_per_dim(network, process, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                     nll_steps: Optional[int] = None, seed: int = 0, batch_size: int = 256,
                     device: Optional[torch.device | str] = None, x0_clip: str = "static",
                     progress: bool = False) -> dict:
    """The bound in bits/dim of uint8 ``images`` ``[N, C, H, W]`` (the mean over images and its standard error),
    with ``L_T``, ``sum L_t`` and ``L_0`` apart and the mean of every evaluated ``L_t`` (for a plot).

    ``labels`` (long ``[N]``) condition a class-conditional network (``-log p(x | y)``); ``None`` uses the
    unconditional (null-class) model. Image ``k``'s noise comes from ``(seed, k)``. ``progress`` shows a bar
    over the batches. Returns a JSON-ready dict.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(network.parameters()).device
    timesteps = nll_timesteps(process.num_steps, nll_steps)
    kl_count = process.num_steps - 1
    scale = kl_count / timesteps.numel() if timesteps.numel() else 0.0
    was_training = getattr(network, "training", False)
    network.eval()
    parts: list[VLBTerms] = []
    try:
        starts = range(0, images.shape[0], batch_size)
        for begin in tqdm(starts, desc="nll", unit="batch", disable=not progress, leave=False):
            index = torch.arange(begin, min(begin + batch_size, images.shape[0]))
            x0 = images[index].to(device).float() / 127.5 - 1.0
            y = None if labels is None else labels[index].to(device)
            parts.append(vlb_terms(network, process, x0, y, timesteps, PerSampleGenerator(seed, index, device),
                                   x0_clip=x0_clip))
    finally:
        network.train(was_training)
    prior = torch.cat([p.prior for p in parts]).cpu()
    kl = torch.cat([p.kl for p in parts]).cpu()
    decoder = torch.cat([p.decoder for p in parts]).cpu()
    kl_sum = kl.double().sum(dim=1) * scale
    total = prior.double() + kl_sum + decoder.double()
    estimate = timesteps.numel() < kl_count
    result = {"bits_per_dim": None, "n": int(images.shape[0]), "dimensions": int(images[0].numel()),
              "num_steps": process.num_steps, "variance": process.variance,
              "nll_steps": None if not estimate else int(timesteps.numel()), "estimate": estimate,
              "kl_scale": scale, "x0_clip": x0_clip, "seed": seed,
              "conditioning": "class labels" if labels is not None else "none (unconditional)"}
    result["bits_per_dim"], result["bits_per_dim_stderr"] = _mean_and_stderr(total)
    result["prior_bpd"], result["prior_bpd_stderr"] = _mean_and_stderr(prior)
    result["kl_sum_bpd"], result["kl_sum_bpd_stderr"] = _mean_and_stderr(kl_sum)
    result["decoder_bpd"], result["decoder_bpd_stderr"] = _mean_and_stderr(decoder)
    result["terms"] = {"t": [0, *timesteps.tolist()],
                       "bpd": [float(decoder.double().mean()), *kl.double().mean(dim=0).tolist()]}
    if estimate:
        result["note"] = (f"strided estimate: the {kl_count} KL terms L_1..L_{kl_count} evaluated at "
                          f"{timesteps.numel()} timesteps and their sum scaled by {scale:.4g}; L_T and L_0 exact")
    return result
