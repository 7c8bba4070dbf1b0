"""Stateless samplers ``(network, process, noise, timesteps, ...) -> x_0`` and helpers to save grids.

Samplers (one shared signature, see :mod:`dreamdata.sampling.registry`): :func:`ddpm_sample` (ancestral),
:func:`ddim_sample` (DDIM, ``eta``), :func:`dpm_solver_pp_2m_sample` (DPM-Solver++(2M)); by name through
:func:`get_sampler`. Timesteps come from :func:`timestep_sequence`; per-sample reproducible noise from
:class:`dreamdata.process.rng.PerSampleGenerator`.
"""

from __future__ import annotations

from dreamdata.sampling.ddim import ddim_sample
from dreamdata.sampling.ddpm import ddpm_sample
from dreamdata.sampling.dpm_solver import dpm_solver_pp_2m_sample
from dreamdata.sampling.grid import class_grid, grid_labels, image_grid, save_grid
from dreamdata.sampling.guidance import guided_output
from dreamdata.sampling.registry import SAMPLERS, get_sampler, sampler_names
from dreamdata.sampling.thresholding import X0_CLIPS, clip_x0, dynamic_threshold
from dreamdata.sampling.timesteps import SPACINGS, respaced_betas, timestep_sequence

__all__ = [
    "SAMPLERS",
    "SPACINGS",
    "X0_CLIPS",
    "class_grid",
    "clip_x0",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver_pp_2m_sample",
    "dynamic_threshold",
    "get_sampler",
    "grid_labels",
    "guided_output",
    "image_grid",
    "respaced_betas",
    "sampler_names",
    "save_grid",
    "timestep_sequence",
]
