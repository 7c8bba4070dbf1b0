"""The one experiment runner: train each arm once, sample and score each cell once, tabulate, draw.

Layout of a sweep directory::

    sweep.json                 the settings every finished cell depends on, and each arm's resolved config
    arms/<arm>/                a `dreamdata train` run per arm (resumed when interrupted)
    cells/<arm>/step-<N>/<sampling>/result.json, samples.npz[, trajectory.npz]
                               (and samples-unscored.npz: all N samples, from sampling until result.json)
    results.jsonl              one line per finished cell, in cell order (assembled from the result files)
    summary.md, *.png          the table and the figures (drawn from results.jsonl and the run directories)

Resuming: an arm with a ``sweep-arm-done.json`` is not trained again; a cell with a ``result.json`` is
never redone, and a cell interrupted while it was scored is scored from its kept samples, not sampled
again. A sweep whose metrics need the Inception network loads it before it trains or samples anything, so
a missing one fails in seconds. Adding an axis value adds arms or cells and runs only those. A change that would make a
finished cell mean something else - another base config for an arm of the same name, another N,
reference or metric list - is an error naming the key.

Sharding (``--shard I/N``, or ``torchrun`` which sets ``RANK``/``WORLD_SIZE``): process I trains arms
I, I+N, ... first, then trains or waits for every other arm (an arm being trained holds a lock file with
its process id, ``arms/<arm>.training.lock``), then scores cells I, I+N, ... of the common cell order.
Each cell's result is its own file, so the shards together give the same ``results.jsonl`` as one process.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from dreamdata.atomic import write_text_atomic
from dreamdata.config import RunConfig
from dreamdata.errors import ConfigError
from dreamdata.experiments.cells import (
    Arm,
    Cell,
    arm_config,
    checkpoint_steps,
    comparable_config,
    make_cell,
    read_json,
    resolve_sampling,
    select_checkpoints,
)
from dreamdata.experiments.sweep_config import SweepConfig
from dreamdata.finite_json import dumps as finite_dumps

__all__ = ["plan_cells", "resolve_arms", "run_sweep", "shard_from_environment"]

ARM_DONE = "sweep-arm-done.json"
SETTINGS_FILE = "sweep.json"
RESULTS_FILE = "results.jsonl"
RESULT_FILE = "result.json"


def shard_from_environment() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment, ``(0, 1)`` outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def resolve_arms(sweep: SweepConfig, out_dir: Path) -> list[Arm]:
    return [arm_config(sweep, spec, out_dir) for spec in sweep.arms]


# -- what finished cells depend on ---------------------------------------------------------------------


def check_settings(sweep: SweepConfig, arms: list[Arm], out_dir: Path) -> None:
    """Refuse a change that invalidates finished work (naming the key); record the new arms."""
    path = out_dir / SETTINGS_FILE
    stored = read_json(path) if path.is_file() else None
    wanted = {"shared": sweep.shared_settings(),
              "arms": {arm.name: comparable_config(arm.config) for arm in arms if not arm.external}}
    if stored is not None:
        for key in sorted(set(stored.get("shared", {})) | set(wanted["shared"])):
            if stored["shared"].get(key) != wanted["shared"].get(key):
                raise ConfigError(f"{path}: {key} was {stored['shared'].get(key)!r} for the finished cells, now "
                                  f"{wanted['shared'].get(key)!r}; use another --out (or delete {out_dir})")
        defaults = comparable_config(RunConfig())  # what a key added since the arm was trained means there
        for name, config in wanted["arms"].items():
            old = stored.get("arms", {}).get(name)
            if old is None:
                continue
            differing = [key for key in sorted(set(old) | set(config))
                         if old.get(key, defaults.get(key)) != config.get(key, defaults.get(key))]
            if differing:
                key = differing[0]
                raise ConfigError(f"{path}: arm {name!r} was trained with {key}={old.get(key)!r}, now "
                                  f"{config.get(key)!r}; give the arm another name, use another --out, or "
                                  f"delete {out_dir / 'arms' / name}")
        wanted["arms"] = {**stored.get("arms", {}), **wanted["arms"]}
    write_text_atomic(path, json.dumps(wanted, indent=1, sort_keys=True) + "\n")


# -- training the arms ---------------------------------------------------------------------------------


def arm_trained(arm: Arm) -> bool:
    """Whether the arm needs no training: trained elsewhere, or finished here for its budget (its done
    marker; see :func:`~dreamdata.experiments.training_stage.stage_finished`)."""
    from dreamdata.experiments.training_stage import stage_finished

    return arm.external or stage_finished(arm.config, arm.run_dir, ARM_DONE)


def train_arm(arm: Arm, log: Callable[[str], None]) -> bool:
    """Train (or resume) the arm unless it is finished or another process trains it; True when finished."""
    from dreamdata.experiments.training_stage import train_stage

    if arm.external:
        return True
    return train_stage(arm.config, arm.run_dir, ARM_DONE, log, f"sweep: training arm {arm.name}")


def train_all_arms(arms: list[Arm], shard: tuple[int, int], log: Callable[[str], None],
                   poll_seconds: float = 10.0) -> None:
    """This shard's arms first, then every other one (training it, or waiting while another process does)."""
    index, count = shard
    order = arms[index::count] + [arm for i, arm in enumerate(arms) if i % count != index]
    waiting = [arm for arm in order if not train_arm(arm, log)]
    while waiting:
        time.sleep(poll_seconds)
        waiting = [arm for arm in waiting if not train_arm(arm, log)]


# -- cells ---------------------------------------------------------------------------------------------


def plan_cells(sweep: SweepConfig, arms: list[Arm]) -> list[Cell]:
    """Every cell of the sweep, in the common order: arm, checkpoint, sampling settings (as listed)."""
    from dreamdata.process import build_process
    from dreamdata.sampling.from_run import run_distilled_sampler

    cells = []
    for arm in arms:
        process = build_process(arm.config.process)
        available = checkpoint_steps(arm.run_dir)
        distilled = run_distilled_sampler(arm.run_dir) if arm.external else None
        arm_cells = []
        for settings in sweep.cells:
            try:
                sampling = resolve_sampling(settings, arm.config.process.kind, process.num_steps, process,
                                            conditional=arm.config.model.class_conditional, distilled=distilled)
            except ConfigError as error:
                raise ConfigError(f"{sweep.source}: arm {arm.name!r}: {error}") from None
            wanted = settings.get("checkpoints", sweep.checkpoints)
            for step in select_checkpoints(wanted, available, arm.name):
                arm_cells.append(make_cell(arm.name, step, sampling))
        for cell in sorted(arm_cells, key=lambda c: c.checkpoint_step):  # stable: cell order within a step
            if all(c.key != cell.key for c in cells):  # e.g. steps 1000 and null on a T = 1000 arm
                cells.append(cell)
    return cells


@contextmanager
def _results_lock(out_dir: Path) -> Iterator[None]:
    import fcntl

    with open(out_dir / ".results.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def assemble_results(out_dir: Path, cells: list[Cell]) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl`` from the finished cells' result files, in cell order."""
    lines = []
    for cell in cells:
        result = read_json(out_dir / "cells" / cell.key / RESULT_FILE)
        if result is not None:
            lines.append(result)
    write_text_atomic(out_dir / RESULTS_FILE, "".join(finite_dumps(line, sort_keys=True) + "\n" for line in lines))
    return lines


def select_arms(arms: list[Arm], only_arms: Optional[list[str]]) -> list[Arm]:
    """The arms named by ``--arm`` (all of them when none is named), in the sweep's order."""
    if not only_arms:
        return arms
    unknown = sorted(set(only_arms) - {arm.name for arm in arms})
    if unknown:
        raise ConfigError(f"--arm {unknown[0]}: the sweep has no such arm (arms: "
                          f"{', '.join(arm.name for arm in arms)})")
    return [arm for arm in arms if arm.name in only_arms]


def run_sweep(sweep: SweepConfig, out_dir: str | Path, shard: tuple[int, int] = (0, 1),
              log: Callable[[str], None] = print, poll_seconds: float = 10.0,
              only_arms: Optional[list[str]] = None) -> Path:
    """Run (or finish) the sweep into ``out_dir``; returns the path of ``summary.md``.

    ``only_arms`` (``--arm``) trains and scores just those arms - one resumable piece of a sweep too long
    for one sitting; the other arms' finished cells stay in ``results.jsonl`` and the figures."""
    from dreamdata.experiments.cell_scoring import CellScorer
    from dreamdata.experiments.figures import draw_figures
    from dreamdata.experiments.summary import write_summary
    from dreamdata.training.setup import resolve_device

    index, count = shard
    if not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: expected I/N with 0 <= I < N")
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    if sweep.num_threads:
        torch.set_num_threads(int(sweep.num_threads))
    arms = resolve_arms(sweep, out_dir)
    selected = select_arms(arms, only_arms)
    with _results_lock(out_dir):
        check_settings(sweep, selected, out_dir)
    scorer = CellScorer(sweep, resolve_device(sweep.device))
    if not all(arm_trained(arm) for arm in selected):
        scorer.check_extractor()  # before hours of training, not after them
    train_all_arms(selected, shard, log, poll_seconds)
    # the other arms take part with what they have: their cells if they were trained in an earlier piece
    chosen = {arm.name for arm in selected}
    planned = [arm for arm in arms if arm.name in chosen or arm_trained(arm)]
    cells = plan_cells(sweep, planned)
    run_dirs = {arm.name: arm.run_dir for arm in arms}
    mine = [cell for cell in cells if cell.arm in chosen][index::count]
    todo = [cell for cell in mine if not (out_dir / "cells" / cell.key / RESULT_FILE).is_file()]
    log(f"sweep {sweep.name}: {len(arms)} arms, {len(cells)} cells ({len(mine)} in this shard, "
        f"{len(todo)} to run)")
    if todo:
        scorer.check_extractor()  # before the first cell's sampling
    for number, cell in enumerate(todo, 1):
        log(f"sweep: cell {number}/{len(todo)}: {cell.key}")
        cell_dir = out_dir / "cells" / cell.key
        started = time.perf_counter()
        result = scorer.score(cell, run_dirs[cell.arm], cell_dir)
        arm = next(a for a in arms if a.name == cell.arm)
        line = {"cell": cell.key, "arm": cell.arm, "axes": arm.axes, "checkpoint_step": cell.checkpoint_step,
                "sampling": cell.sampling, **result}
        line["seconds"]["total"] = round(time.perf_counter() - started, 2)
        write_text_atomic(cell_dir / RESULT_FILE, finite_dumps(line, indent=1, sort_keys=True) + "\n")
        scorer.discard_kept_samples(cell_dir)
        with _results_lock(out_dir):
            assemble_results(out_dir, cells)
    with _results_lock(out_dir):
        results = assemble_results(out_dir, cells)
        draw_figures(out_dir, sweep.figures, run_dirs=run_dirs, arm_configs={a.name: a.config for a in arms})
        summary = write_summary(out_dir, sweep, results, total_cells=len(cells), run_dirs=run_dirs)
    return summary
