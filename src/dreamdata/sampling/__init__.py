"""Stateless samplers ``(network, process, start, timesteps, ...) -> x_0`` and helpers to save grids."""

from __future__ import annotations

from dreamdata.sampling.ddpm import ddpm_sample, guided_output
from dreamdata.sampling.grid import class_grid, grid_labels, image_grid, save_grid
from dreamdata.sampling.timesteps import respaced_betas, timestep_sequence

__all__ = [
    "class_grid",
    "ddpm_sample",
    "grid_labels",
    "guided_output",
    "image_grid",
    "respaced_betas",
    "save_grid",
    "timestep_sequence",
]
