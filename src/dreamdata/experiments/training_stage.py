"""Training a run to completion as one stage of an experiment: the one home of the resume mechanics that
the sweep's arms and the study's generators share.

A stage is finished when its run directory holds the ``done_file`` marker (written atomically after
``train`` returns, with the step it reached) and, for a step budget, that step is at least the budget asked
now: a run finished at 2,000 steps and asked for 6,000 is continued, not silently taken as it is. With a
learning rate that does not depend on the budget (``train.lr_schedule: constant`` after warm-up, the
default) the continued run is the 6,000-step run; a cosine decay is not (it had decayed to zero at 2,000),
and the log says so when such a stage is continued.
Otherwise it resumes from the run's latest checkpoint, or starts anew - discarding a start that died before
its first checkpoint. A lock file beside the run directory (not in it: a new run's directory must be empty)
keeps two processes (sweep shards, a second terminal) from training one run at once; a lock whose process
has died is taken over.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dreamdata.atomic import write_text_atomic
from dreamdata.config import RunConfig

LOCK_SUFFIX = "training.lock"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def training_lock(run_dir: Path) -> Iterator[bool]:
    """Hold the run's lock file (yields True), or yield False when a live process holds it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = run_dir.parent / f"{run_dir.name}.{LOCK_SUFFIX}"
    try:
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            holder = int(lock.read_text().strip() or 0)
        except (OSError, ValueError):
            holder = 0
        if holder and _process_alive(holder) and holder != os.getpid():
            yield False
            return
        lock.unlink(missing_ok=True)  # a stale lock: its process died
        descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    try:
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        yield True
    finally:
        lock.unlink(missing_ok=True)


def _marked_step(marker: Path) -> int:
    """The step a done marker records (0 when unreadable: the checkpoint then decides, and train refuses a
    budget below it)."""
    try:
        return int(json.loads(marker.read_text()).get("step", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def stage_finished(config: RunConfig, run_dir: Path, done_file: str) -> bool:
    """Whether ``run_dir`` holds a finished stage for ``config``: its marker exists and, when the budget is a
    number of steps, records at least that many (a minutes or epochs budget is taken as met by the marker)."""
    marker = run_dir / done_file
    if not marker.is_file():
        return False
    if config.train.steps is None:
        return True
    return _marked_step(marker) >= config.train.steps


def train_stage(config: RunConfig, run_dir: Path, done_file: str, log: Callable[[str], None],
                description: str) -> bool:
    """Train ``config`` into ``run_dir`` until its budget is spent, resuming what an earlier attempt left;
    True when the stage is finished, False when another live process is training it."""
    from dreamdata.training import checkpoint as ckpt
    from dreamdata.training.run_dir import discard_unstarted_run
    from dreamdata.training.trainer import train

    if stage_finished(config, run_dir, done_file):
        return True
    with training_lock(run_dir) as held:
        if not held:
            return False
        marker = run_dir / done_file
        if marker.is_file():  # a finished run asked for more steps: not done until then
            if config.train.lr_schedule == "cosine":
                reached, steps = _marked_step(marker), config.train.steps
                log(f"{description}: continuing a run finished at {reached} steps to {steps} under "
                    f"train.lr_schedule cosine: its learning rate decayed to zero by step {reached} and now jumps "
                    f"to the {steps}-step decay, so this is not the run a {steps}-step budget trains at once "
                    f"(train that under another name)")
            marker.unlink()
        resume = run_dir if ckpt.latest_checkpoint(run_dir) is not None else None
        if resume is None and run_dir.is_dir():  # a start that died before its first checkpoint
            discard_unstarted_run(run_dir)
        log(f"{description} ({'resuming' if resume else 'new run'}) in {run_dir}")
        result = train(config, resume=resume, run_dir=None if resume else run_dir)
        write_text_atomic(run_dir / done_file, json.dumps({"step": result.step}) + "\n")
    return True
