"""What a distilled checkpoint promises: the one sampler it was distilled for.

A progressively distilled student (:mod:`dreamdata.distill`) is no longer a denoiser for every ``t``: round
by round it was trained to make one jump of a fixed size from each point of one timestep grid. So its
checkpoint records that sampler - deterministic DDIM (``eta = 0``), ``steps`` steps on the ``trailing``
grid (the exact list of training indices is kept too), and the classifier-free guidance ``w`` that was
baked in - in the safetensors metadata under :data:`METADATA_KEY`, next to the config. The record lives in
every checkpoint (each round's student is a model for its own number of steps), so a ``.safetensors`` file
alone is self-describing; :func:`dreamdata.sampling.from_run.distilled_sampling` turns it into the sampling
defaults of ``sample``, ``evaluate``, ``dream``, ``interpolate`` and the sweep.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from dreamdata.errors import CheckpointError

__all__ = ["DISTILLED_SPACING", "DistilledSampler", "METADATA_KEY", "read_distilled"]

METADATA_KEY = "distilled"
DISTILLED_SPACING = "trailing"
"""The grid every distillation uses (see :func:`dreamdata.distill.target.distillation_grids`)."""


@dataclass(frozen=True)
class DistilledSampler:
    """The sampler a distilled student reproduces its teacher with."""

    steps: int  # DDIM steps the student was distilled for
    timesteps: tuple[int, ...]  # the grid: training indices visited, strictly descending (DDIM then lands on x0)
    guidance: float  # classifier-free guidance w baked into the student (its own guidance must be 0)
    x0_clip: str  # the clipping of the teacher's x0 predictions in the targets it was trained on
    teacher_steps: int  # the teacher's DDIM steps of the round that made this student (2 * steps)
    round: int  # 0-based distillation round
    rounds: int  # rounds of the whole distillation (this student is the final one when round == rounds - 1)
    sampler: str = "ddim"  # deterministic DDIM, eta = 0 (the teacher's sampler in every round)
    spacing: str = DISTILLED_SPACING

    def to_json(self) -> str:
        record = asdict(self)
        record["timesteps"] = list(self.timesteps)
        return json.dumps(record)

    def describe(self) -> str:
        """``ddim, 4 steps on the trailing grid [999, 749, 499, 249], guidance w = 1.5 baked in``."""
        grid = ", ".join(str(t) for t in self.timesteps)
        return (f"{self.sampler}, {self.steps} step{'s' if self.steps != 1 else ''} on the {self.spacing} grid "
                f"[{grid}], guidance w = {self.guidance:g} baked in")


def read_distilled(metadata: dict[str, str], source: Path | str) -> Optional[DistilledSampler]:
    """The record in a checkpoint's metadata, ``None`` for a checkpoint that is not a distilled student;
    a :class:`~dreamdata.errors.CheckpointError` naming ``source`` for one that cannot be read."""
    text = metadata.get(METADATA_KEY)
    if text is None:
        return None
    try:
        record: dict[str, Any] = json.loads(text)
        record["timesteps"] = tuple(int(t) for t in record["timesteps"])
        distilled = DistilledSampler(**record)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{source}: metadata {METADATA_KEY!r} is not a readable distilled-sampler record "
                              f"({error})") from None
    if distilled.steps != len(distilled.timesteps) or distilled.steps < 1:
        raise CheckpointError(f"{source}: metadata {METADATA_KEY!r} says {distilled.steps} steps but lists "
                              f"{len(distilled.timesteps)} timesteps")
    return distilled
