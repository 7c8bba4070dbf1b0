"""Where a run keeps the few-step grids searched for its checkpoints (``dreamdata search-grid``), and how a
loaded model finds them again: ``RUN/searched-grids.json``.

A searched grid (:mod:`~dreamdata.sampling.searched_grid`) belongs to one checkpoint and one set of weights (EMA
or raw), so each entry names both; :func:`~dreamdata.training.pretrained.load_trained` hands the grids of the
checkpoint it loads to the process (``process.searched_grids``, step count -> timesteps), and ``--spacing
searched`` (:func:`~dreamdata.sampling.generate.sampling_timesteps`) samples on them.
"""

from __future__ import annotations

import json
from pathlib import Path

from dreamdata.atomic import write_text_atomic
from dreamdata.errors import CheckpointError

__all__ = ["GRIDS_FILE", "grids_for_checkpoint", "record_grid"]

GRIDS_FILE = "searched-grids.json"
FORMAT = "dreamdata-searched-grids-1"


def _read(run_dir: Path) -> list[dict]:
    path = run_dir / GRIDS_FILE
    if not path.is_file():
        return []
    try:
        stored = json.loads(path.read_text())
        entries = stored["grids"]
        if stored.get("format") != FORMAT or not isinstance(entries, list):
            raise ValueError(f"expected format {FORMAT!r} with a list of grids")
        return entries
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a readable searched-grid file ({error}); delete it and run "
                              "`dreamdata search-grid` again") from None


def grids_for_checkpoint(checkpoint: Path, weights: str) -> dict[int, list[int]]:
    """The grids searched for ``checkpoint`` (``RUN/checkpoints/step-*.safetensors``) with ``weights`` (``ema`` or
    ``model``): step count -> descending timesteps. Empty when none were searched."""
    run_dir = Path(checkpoint).parent.parent
    return {int(entry["steps"]): [int(t) for t in entry["timesteps"]] for entry in _read(run_dir)
            if entry.get("checkpoint") == Path(checkpoint).name and entry.get("weights") == weights}


def record_grid(checkpoint: Path, weights: str, entry: dict) -> Path:
    """Add (or replace) the grid ``entry`` (``steps``, ``timesteps`` and how it was searched) of ``checkpoint``
    and ``weights`` in the run's grid file, written atomically; returns the file's path."""
    run_dir = Path(checkpoint).parent.parent
    entry = {**entry, "checkpoint": Path(checkpoint).name, "weights": weights}
    kept = [old for old in _read(run_dir) if (old.get("checkpoint"), old.get("weights"), old.get("steps"))
            != (entry["checkpoint"], weights, entry["steps"])]
    path = run_dir / GRIDS_FILE
    write_text_atomic(path, json.dumps({"format": FORMAT, "grids": [*kept, entry]}, indent=1) + "\n")
    return path
