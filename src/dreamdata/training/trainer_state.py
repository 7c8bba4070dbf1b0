"""What a training checkpoint holds besides the weights, and how a resume puts it back into the trainer.

:mod:`dreamdata.training.checkpoint` writes and reads the files (weights and metadata as safetensors, the
state as ``step-NNNNNNNNN.state.pt``); this module decides the state's contents, so what is saved and what
is restored sit side by side. A resumed run continues *exactly* because the state holds everything the
loop carries from one step to the next:

* ``step`` and ``elapsed`` (training seconds, accumulated across resumes);
* the objective's optimizer and LR-scheduler state (and a process's importance-sampling history), and the
  EMA's update count;
* ``per_rank``: each rank's torch RNG state and running loss window, gathered to rank 0, and the
  ``world_size`` that saved them (a resume with another one is refused: the streams would not continue);
* the metrics window's step counts and the run of non-finite steps in a row.

Both functions are collective under DDP: every rank calls them at the same steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dreamdata.config import config_json
from dreamdata.errors import CheckpointError
from dreamdata.training import checkpoint as ckpt
from dreamdata.training import run_dir as rd
from dreamdata.training.distributed import gather_objects
from dreamdata.training.run_dir import data_description
from dreamdata.training.setup import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from dreamdata.training.trainer import Trainer

__all__ = ["restore_trainer_state", "save_trainer_state"]


def _metadata(trainer: Trainer) -> dict[str, str]:
    """The checkpoint's metadata: the resolved run config and the data description, as JSON."""
    return {"config": config_json(trainer.config),
            "data": json.dumps(data_description(trainer.train_data, trainer.val_data))}


def save_trainer_state(trainer: Trainer) -> Optional[Path]:
    """Write a checkpoint of ``trainer`` at its current step: the path of its weights on rank 0 (``None`` on
    the other ranks, and without a run directory). Every rank contributes its RNG state and loss window."""
    # each rank's own random stream and loss window, so a resume continues every rank exactly
    per_rank = gather_objects({"rng": capture_rng_state(trainer.device),
                               "window_loss": trainer.window_loss.detach().cpu()}, trainer.context)
    if not trainer.context.is_main or trainer.run_dir is None:
        return None
    state = {"step": trainer.step, "elapsed": trainer.elapsed, **trainer.objective.optimizer_state(),
             "ema_updates": trainer.ema.num_updates,
             "per_rank": per_rank, "window_steps": trainer.window_steps, "world_size": trainer.context.world_size,
             "window_skipped": trainer.window_skipped, "bad_in_a_row": trainer.bad_in_a_row}
    return ckpt.save_checkpoint(trainer.run_dir, trainer.step, trainer.network, trainer.objective.sampling_network(),
                                state, _metadata(trainer), keep=trainer.config.train.keep_checkpoints,
                                protected_steps=trainer.config.train.keep_steps)


def restore_trainer_state(trainer: Trainer) -> None:
    """Load the newest checkpoint of ``trainer.run_dir`` into ``trainer``: weights, EMA, optimizer, counters
    and this rank's RNG state; on rank 0, drop the metrics lines logged after it."""
    loaded = ckpt.load_latest(trainer.run_dir, device=trainer.device, with_state=True,
                              report=trainer.context.is_main)
    if loaded is None:
        raise CheckpointError(f"{trainer.run_dir}: no checkpoint to resume from yet")
    weights_path, weights, state = loaded.path, loaded.weights, loaded.state
    if state.get("distill"):
        raise CheckpointError(f"{trainer.run_dir}: is a distillation run (dreamdata distill), not a training run; "
                              "re-run its `dreamdata distill` command to continue it")
    ckpt.load_into(trainer.network, weights.model, weights_path)
    ckpt.load_into(trainer.ema.module, weights.ema, weights_path)
    if state.get("world_size", 1) != trainer.context.world_size:
        raise CheckpointError(f"{weights_path}: saved by {state.get('world_size')} processes, resumed with "
                              f"{trainer.context.world_size}; per-rank RNG streams would not continue exactly")
    trainer.objective.load_optimizer_state(state, trainer.config)
    trainer.ema.num_updates = state["ema_updates"]
    trainer.step, trainer.elapsed = state["step"], state["elapsed"]
    trainer.saved_step = trainer.step
    mine = state["per_rank"][trainer.context.rank]
    # a scalar in checkpoints older than the GAN objective (one loss then)
    trainer.window_loss = mine["window_loss"].to(trainer.device).reshape(len(trainer.objective.loss_names))
    trainer.window_steps = state["window_steps"]
    trainer.window_skipped = state.get("window_skipped", 0)
    trainer.bad_in_a_row = state.get("bad_in_a_row", 0)
    trainer.last_checkpoint = weights_path
    restore_rng_state(mine["rng"], trainer.device)
    if trainer.context.is_main:
        rd.truncate_metrics(trainer.run_dir, trainer.step)
