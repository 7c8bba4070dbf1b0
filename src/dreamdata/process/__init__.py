"""Forward corruption processes and their training objectives.

:func:`build_process` turns a :class:`~dreamdata.config.ProcessConfig` into a
:class:`~dreamdata.process.base.Process`: Gaussian noise (DDPM, ``kind: gaussian``) or deterministic Gaussian
blur (cold diffusion, ``kind: blur``), or the adversarial objective of a GAN (``kind: gan``, see
:mod:`dreamdata.gan.process`).
"""

from __future__ import annotations

from dreamdata.config import ProcessConfig
from dreamdata.process.base import Network, Process
from dreamdata.process.blur import GaussianBlurDegradation
from dreamdata.process.blur_operator import blur_betas
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.schedules import (
    ScheduleTensors,
    ScheduleWarning,
    betas_from_config,
    constant_betas,
    cosine_betas,
    derive_schedule,
    linear_betas,
)

__all__ = [
    "GaussianBlurDegradation",
    "GaussianDiffusion",
    "Network",
    "Process",
    "ScheduleTensors",
    "ScheduleWarning",
    "betas_from_config",
    "blur_betas",
    "build_process",
    "constant_betas",
    "cosine_betas",
    "derive_schedule",
    "linear_betas",
]

PROCESS_KINDS = ("gaussian", "blur", "gan")


def build_process(config: ProcessConfig) -> Process:
    """The process ``config.kind`` names, built from the rest of ``config``."""
    if config.kind == "gaussian":
        return GaussianDiffusion.from_config(config)
    if config.kind == "blur":
        return GaussianBlurDegradation.from_config(config)
    if config.kind == "gan":
        from dreamdata.gan.process import AdversarialProcess  # the adversarial objective, T = 1

        return AdversarialProcess.from_config(config)
    raise ValueError(f"unknown process kind {config.kind!r} (known: {', '.join(PROCESS_KINDS)})")
