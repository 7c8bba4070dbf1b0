"""Forward corruption processes and their training objectives.

:func:`build_process` turns a :class:`~dreamdata.config.ProcessConfig` into a
:class:`~dreamdata.process.base.Process`; only the Gaussian (DDPM) process exists so far.
"""

from __future__ import annotations

from dreamdata.config import ProcessConfig
from dreamdata.process.base import Network, Process
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.schedules import (
    ScheduleTensors,
    betas_from_config,
    constant_betas,
    cosine_betas,
    derive_schedule,
    linear_betas,
)

__all__ = [
    "GaussianDiffusion",
    "Network",
    "Process",
    "ScheduleTensors",
    "betas_from_config",
    "build_process",
    "constant_betas",
    "cosine_betas",
    "derive_schedule",
    "linear_betas",
]

PROCESS_KINDS = ("gaussian",)


def build_process(config: ProcessConfig) -> Process:
    """The process ``config.kind`` names, built from the rest of ``config``."""
    if config.kind == "gaussian":
        return GaussianDiffusion.from_config(config)
    raise ValueError(f"unknown process kind {config.kind!r} (known: {', '.join(PROCESS_KINDS)})")
