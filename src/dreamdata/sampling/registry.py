"""The samplers by name, for the command line: ``get_sampler("dpm++2m")``.

Every entry has the shared signature ``fn(network, process, noise, timesteps, class_labels=None,
guidance_scale=0.0, generator=None, x0_clip="static", progress=False, callback=None, null_class=None,
**sampler_specific) -> Tensor``; library code calls the functions directly.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from dreamdata.sampling.ddim import ddim_sample
from dreamdata.sampling.ddpm import ddpm_sample
from dreamdata.sampling.dpm_solver import dpm_solver_pp_2m_sample

__all__ = ["SAMPLERS", "get_sampler", "sampler_names"]

SAMPLERS: dict[str, Callable] = {
    "ddpm": ddpm_sample,  # ancestral, posterior variance beta_tilde (Ho et al. 2020)
    "ddpm_beta": partial(ddpm_sample, variance="beta"),  # ancestral, variance beta (Ho et al. 2020, sec. 3.2)
    "ddim": ddim_sample,  # deterministic DDIM, eta = 0 (Song et al. 2021); pass eta=... for noise
    "dpm++2m": dpm_solver_pp_2m_sample,  # DPM-Solver++(2M) (Lu et al. 2022), good at 10-20 steps
}


def sampler_names() -> list[str]:
    """The registered sampler names, in registry order."""
    return list(SAMPLERS)


def get_sampler(name: str) -> Callable:
    """The sampler registered as ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})") from None
