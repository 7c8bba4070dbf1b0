"""Stateless samplers ``(network, process, noise, timesteps, ...) -> x_0`` and helpers to save grids.

Samplers (one shared signature, see :mod:`dreamdata.sampling.registry`): :func:`ddpm_sample` (ancestral),
:func:`ddim_sample` (DDIM, ``eta``), :func:`dpm_solver_pp_2m_sample` (DPM-Solver++(2M)); by name through
:func:`get_sampler`. Cold diffusion (deterministic degradations such as blur): :func:`cold_naive_sample` and
:func:`cold_improved_sample` (Bansal et al. 2022, Algorithms 1 and 2). Timesteps come from
:func:`timestep_sequence`; per-sample reproducible noise from :class:`dreamdata.process.rng.PerSampleGenerator`.
"""

from __future__ import annotations

from dreamdata.sampling.cold import cold_improved_sample, cold_naive_sample
from dreamdata.sampling.ddim import ddim_sample
from dreamdata.sampling.ddpm import ddpm_sample
from dreamdata.sampling.dpm_solver import dpm_solver_pp_2m_sample
from dreamdata.sampling.grid import class_grid, grid_labels, image_grid, save_grid
from dreamdata.sampling.guidance import guided_output
from dreamdata.sampling.registry import (
                                         COLD_SAMPLERS,
                                         SAMPLERS,
                                         default_sampler,
                                         get_sampler,
                                         sampler_names,
                                         samplers_for,
)
from dreamdata.sampling.thresholding import X0_CLIPS, clip_x0, dynamic_threshold
from dreamdata.sampling.timesteps import SPACINGS, respaced_betas, timestep_sequence

__all__ = [
    "COLD_SAMPLERS",
    "SAMPLERS",
    "SPACINGS",
    "X0_CLIPS",
    "class_grid",
    "clip_x0",
    "cold_improved_sample",
    "cold_naive_sample",
    "ddim_sample",
    "ddpm_sample",
    "default_sampler",
    "dpm_solver_pp_2m_sample",
    "dynamic_threshold",
    "get_sampler",
    "grid_labels",
    "guided_output",
    "image_grid",
    "respaced_betas",
    "sampler_names",
    "samplers_for",
    "save_grid",
    "timestep_sequence",
]
