"""What a distillation run is asked to do: its options, checked against the teacher, resolved into the plan
that ``distill.json`` records and that a resume must match.

Unset options come from the teacher's run config (``train.batch_size``, ``train.lr``,
``train.checkpoint_every``, ``train.log_every``), so a distillation runs at its teacher's scale unless told
otherwise. Everything that changes the result is in :data:`RESULT_KEYS`: re-running a command with other
values for any of them is refused rather than resumed (the checkpoints would then mix two distillations).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from dreamdata.distill.record import DistilledSampler
from dreamdata.distill.target import distillation_grids
from dreamdata.errors import CheckpointError, DreamdataError
from dreamdata.sampling.thresholding import X0_CLIPS

__all__ = ["DistillOptions", "PLAN_FILE", "RESULT_KEYS", "check_resumable", "read_plan", "resolve_plan"]

PLAN_FILE = "distill.json"
RESULT_KEYS = ("teacher_run", "teacher_step", "from_steps", "to_steps", "steps_per_round", "batch_size", "lr",
               "guidance", "baked_guidance", "x0_clip", "seed", "grids", "prediction")
"""Plan keys a resume must match (the others - checkpoint and log intervals - only say how often to write)."""


@dataclass
class DistillOptions:
    """The options of ``dreamdata distill``; ``None`` = the teacher run's value (or the default below)."""

    from_steps: Optional[int] = None  # the first teacher's DDIM steps (None: 64, or a distilled teacher's own)
    to_steps: int = 4  # the final student's steps
    steps_per_round: int = 1000  # updates per round (halving)
    batch_size: Optional[int] = None  # None: the teacher's train.batch_size
    lr: Optional[float] = None  # None: the teacher's train.lr; annealed linearly to 0 in each round
    guidance: float = 0.0  # classifier-free guidance w of the teacher, baked into the student
    x0_clip: str = "static"  # clipping of the teacher's x0 (static = the samplers' default)
    seed: int = 0
    checkpoint_every: Optional[int] = None  # None: the teacher's train.checkpoint_every (0: round ends only)
    log_every: Optional[int] = None  # None: the teacher's train.log_every


def resolve_plan(options: DistillOptions, teacher, teacher_run: Path) -> dict[str, Any]:
    """The plan for distilling ``teacher`` (a :class:`~dreamdata.training.pretrained.TrainedModel`), with a
    :class:`~dreamdata.errors.DreamdataError` naming the option at fault for anything that cannot work."""
    from dreamdata.process.gaussian import GaussianDiffusion

    if not isinstance(teacher.process, GaussianDiffusion):
        raise DreamdataError(f"{teacher_run}: distillation needs a Gaussian diffusion run (it distils DDIM); this "
                             f"run's process is {teacher.config.process.kind}")
    chained: Optional[DistilledSampler] = teacher.distilled
    from_steps = options.from_steps
    if chained is not None:  # distilling a distilled run further: it is a teacher for its own grid only
        if from_steps not in (None, chained.steps):
            raise DreamdataError(f"--from-steps {from_steps}: {teacher_run} is distilled for {chained.steps} steps "
                                 f"({chained.describe()}), so its distillation starts there (drop --from-steps)")
        if options.guidance != 0:
            raise DreamdataError(f"--guidance {options.guidance:g}: {teacher_run} is distilled with guidance w = "
                                 f"{chained.guidance:g} baked in; distil it further with --guidance 0")
        from_steps = chained.steps
    from_steps = 64 if from_steps is None else from_steps
    tc = teacher.config.train
    for name, value in (("from-steps", from_steps), ("to-steps", options.to_steps),
                        ("steps-per-round", options.steps_per_round), ("batch", options.batch_size),
                        ("checkpoint-every", options.checkpoint_every), ("log-every", options.log_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (0 if name == "checkpoint-every" else 1)):
            raise DreamdataError(f"--{name} must be a positive integer, got {value!r}")
    try:
        grids = distillation_grids(teacher.process.num_steps, from_steps, options.to_steps)
    except ValueError as error:
        raise DreamdataError(f"--from-steps/--to-steps: {error}") from None
    conditional = int(getattr(teacher.network, "num_classes", 0)) > 0
    if options.guidance != 0 and not conditional:
        raise DreamdataError(f"--guidance {options.guidance:g}: {teacher_run} is unconditional, so there is nothing "
                             "to guide towards (use --guidance 0)")
    if options.x0_clip not in X0_CLIPS:
        raise DreamdataError(f"--x0-clip {options.x0_clip!r}: expected one of {', '.join(X0_CLIPS)}")
    lr = tc.lr if options.lr is None else float(options.lr)
    if not lr > 0:
        raise DreamdataError(f"--lr must be > 0, got {lr:g}")
    return {
        "teacher_run": str(teacher_run.resolve()), "teacher_checkpoint": str(Path(teacher.checkpoint).resolve()),
        "teacher_step": teacher.step, "from_steps": from_steps, "to_steps": options.to_steps,
        "rounds": len(grids) - 1, "steps_per_round": options.steps_per_round,
        "batch_size": tc.batch_size if options.batch_size is None else options.batch_size, "lr": lr,
        "lr_schedule": "linear from lr to 0 in each round", "guidance": float(options.guidance),
        "baked_guidance": float(options.guidance if chained is None else chained.guidance),
        "x0_clip": options.x0_clip, "seed": options.seed,
        "checkpoint_every": tc.checkpoint_every if options.checkpoint_every is None else options.checkpoint_every,
        "log_every": tc.log_every if options.log_every is None else options.log_every,
        "grids": grids, "sampler": "ddim", "spacing": "trailing", "prediction": teacher.process.prediction,
        "loss": "max(SNR_t, 1) * mean((x_student - x_target)^2), Salimans & Ho 2022 Algorithm 2 and sec. 4",
    }


def read_plan(run_dir: Path) -> Optional[dict[str, Any]]:
    """The plan a distillation run recorded, or None if ``run_dir`` holds none."""
    path = Path(run_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable distillation plan ({error})") from None
    if not isinstance(plan, dict):
        raise CheckpointError(f"{path}: not a distillation plan (expected a JSON object)")
    return plan


def check_resumable(recorded: dict[str, Any], plan: dict[str, Any], run_dir: Path) -> None:
    """A :class:`~dreamdata.errors.DreamdataError` naming the first result key on which the command's plan
    differs from the run's (see :data:`RESULT_KEYS`)."""
    for key in RESULT_KEYS:
        if recorded.get(key) != plan.get(key):
            raise DreamdataError(f"--out {run_dir}: holds a distillation with {key} = {recorded.get(key)!r}, and this "
                                 f"command asks for {plan.get(key)!r}; re-run the command that started it to "
                                 "continue it, or give another --out")
