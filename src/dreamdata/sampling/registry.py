"""The samplers by name, for the command line: ``get_sampler("dpm++2m")``, ``get_sampler("cold-improved", process)``.

Three families, one per kind of process. Every entry has the shared signature ``fn(network, process, start,
timesteps, class_labels=None, guidance_scale=0.0, generator=None, x0_clip="static", progress=False,
callback=None, null_class=None, *, guidance_interval=None, **sampler_specific) -> Tensor``, where ``start``
is the state at ``timesteps[0]`` (named ``noise`` by the Gaussian samplers, whose start is pure noise), and
``guidance_interval`` limits guidance to noise levels ``σ_lo < σ ≤ σ_hi`` (Gaussian samplers only; see
:mod:`dreamdata.sampling.guidance`). Library code calls the functions directly.

* :data:`SAMPLERS` - Gaussian diffusion (:class:`~dreamdata.process.gaussian.GaussianDiffusion`);
* :data:`COLD_SAMPLERS` - deterministic degradations (:class:`~dreamdata.process.blur.GaussianBlurDegradation`);
* :data:`GAN_SAMPLERS` - a GAN's generator (:class:`~dreamdata.gan.process.AdversarialProcess`): one pass.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from dreamdata.process.blur import GaussianBlurDegradation
from dreamdata.sampling.cold import cold_improved_sample, cold_naive_sample
from dreamdata.sampling.ddim import ddim_sample
from dreamdata.sampling.ddpm import ddpm_sample
from dreamdata.sampling.dpm_solver import dpm_solver_pp_2m_sample
from dreamdata.sampling.gan import gan_sample

__all__ = ["COLD_SAMPLERS", "GAN_SAMPLERS", "SAMPLERS", "default_sampler", "get_sampler", "sampler_names",
           "samplers_for"]

SAMPLERS: dict[str, Callable] = {
    "ddpm": ddpm_sample,  # ancestral, the process's variance: beta_tilde (Ho et al. 2020), beta or learned (iDDPM)
    "ddpm_beta": partial(ddpm_sample, variance="beta"),  # ancestral, variance beta (Ho et al. 2020, sec. 3.2)
    "ddim": ddim_sample,  # deterministic DDIM, eta = 0 (Song et al. 2021); pass eta=... for noise
    "dpm++2m": dpm_solver_pp_2m_sample,  # DPM-Solver++(2M) (Lu et al. 2022), good at 10-20 steps
    # SDE-DPM-Solver++(2M): the ancestral sampler's noise, second order
    "dpm++2m-sde": partial(dpm_solver_pp_2m_sample, eta=1.0),
    "dpm++3m": partial(dpm_solver_pp_2m_sample, order=3),  # DPM-Solver++(3M): a parabola through three predictions
    "dpm++3m-sde": partial(dpm_solver_pp_2m_sample, order=3, eta=1.0),  # its SDE form (k-diffusion's dpmpp_3m_sde)
}

COLD_SAMPLERS: dict[str, Callable] = {
    "cold-improved": cold_improved_sample,  # Bansal et al. 2022, Algorithm 2 (the default)
    "cold-naive": cold_naive_sample,  # Bansal et al. 2022, Algorithm 1
}

GAN_SAMPLERS: dict[str, Callable] = {
    "gan": gan_sample,  # x = G(z, y), one network evaluation
}

# each family, the process kind it fits (for messages), and its default
_FAMILIES = ((SAMPLERS, "Gaussian diffusion", "ddpm"),
             (COLD_SAMPLERS, "blur (cold diffusion)", "cold-improved"),
             (GAN_SAMPLERS, "a GAN", "gan"))


def _family(process) -> tuple[dict[str, Callable], str, str]:
    from dreamdata.gan.process import AdversarialProcess

    if isinstance(process, GaussianBlurDegradation):
        return _FAMILIES[1]
    if isinstance(process, AdversarialProcess):
        return _FAMILIES[2]
    return _FAMILIES[0]


def samplers_for(process) -> dict[str, Callable]:
    """The samplers that fit ``process``: the cold family for a blur process, the generator pass for a GAN,
    else the Gaussian family."""
    return _family(process)[0]


def default_sampler(process) -> str:
    """``cold-improved`` for a blur process, ``gan`` for a GAN, ``ddpm`` for Gaussian diffusion."""
    return _family(process)[2]


def sampler_names(process=None) -> list[str]:
    """The Gaussian sampler names (``process=None``), or those that fit ``process``, in registry order."""
    return list(SAMPLERS if process is None else samplers_for(process))


def get_sampler(name: str, process=None) -> Callable:
    """The sampler registered as ``name``; ``ValueError`` naming the known ones otherwise.

    With ``process`` given, a sampler of the other family is refused with a message saying which fit.
    """
    known = [sampler for family, _, _ in _FAMILIES for sampler in family]
    if process is not None:
        fitting, kind, _ = _family(process)
        if isinstance(name, str) and name in fitting:
            return fitting[name]
        if isinstance(name, str) and name in known:
            raise ValueError(f"sampler {name!r} does not fit this run's process, {kind}; "
                             f"use {'one of ' if len(fitting) > 1 else ''}{', '.join(fitting)}")
        raise ValueError(f"unknown sampler {name!r} (for {kind}: {', '.join(fitting)})")
    for family, _, _ in _FAMILIES:
        if isinstance(name, str) and name in family:
            return family[name]
    raise ValueError(f"unknown sampler {name!r} (known: {', '.join(known)})")

