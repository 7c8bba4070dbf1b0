"""The self-describing run directory.

Layout (EDM-style numbered directories, so runs sort by creation)::

    runs/00003-fashion-mnist/
        config.yaml        resolved RunConfig (everything the run was built from)
        version.json       dreamdata/torch versions, git commit and dirty flag, command line
        data.json          class names, image shape, train/val sizes
        metrics.jsonl      one JSON object per line: step, epoch, loss, val_loss, lr, img_per_s, ...
        checkpoints/       step-000001000.safetensors (+ .state.pt), latest.json
        samples/           grid-step-000001000.png

Reports and later commands (sample, evaluate, dream) only read these files.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

import dreamdata
from dreamdata.atomic import append_line, remove_stale_temporaries, write_text_atomic
from dreamdata.config import RunConfig, config_from_dict, load_yaml
from dreamdata.errors import CheckpointError
from dreamdata.finite_json import dumps as finite_dumps
from dreamdata.finite_json import restore as restore_nonfinite

if TYPE_CHECKING:
    from dreamdata.data import ImageData

CONFIG_FILE = "config.yaml"
VERSION_FILE = "version.json"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``runs_dir/NNNNN-name`` with the next free number."""
    runs_dir = Path(runs_dir).expanduser()
    runs_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[:5]) for p in runs_dir.iterdir() if re.match(r"^\d{5}-", p.name)]
    number = max(numbers, default=-1) + 1
    while True:
        path = runs_dir / f"{number:05d}-{_slug(name)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another process took this number; take the next
            number += 1


def claim_run_dir(path: str | Path) -> Path:
    """Create ``path`` for a new run, refusing a directory that already holds files.

    Training into a used directory would overwrite its checkpoints and mix two runs in one
    ``metrics.jsonl``; continuing that run is ``--resume``'s job.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"--run-dir {path}: is a file, not a directory")
    if path.is_dir() and any(path.iterdir()):
        if (path / CONFIG_FILE).is_file() and any((path / "checkpoints").glob("step-*.safetensors")):
            raise CheckpointError(f"--run-dir {path}: already holds a run; continue it with "
                                  f"`dreamdata train --resume {path}`, or give a new or empty --run-dir")
        if (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"--run-dir {path}: holds a run that has no checkpoint yet (still starting, or "
                                  "stopped before its first one, so --resume cannot continue it); delete it or "
                                  "give a new or empty --run-dir")
        raise CheckpointError(f"--run-dir {path}: not empty; a new run needs a new or empty directory "
                              f"(to continue a run there, use `dreamdata train --resume {path}`)")
    path.mkdir(parents=True, exist_ok=True)
    return path


# what a run writes before its first checkpoint
_UNSTARTED_FILES = ("config.yaml", "version.json", "data.json", "metrics.jsonl")


def discard_unstarted_run(path: str | Path) -> None:
    """Remove the files of a run that stopped before its first checkpoint, so it can begin again from step 0.

    For callers that own the directory (a study's generator run); a run with a checkpoint is resumed instead.
    """
    path = Path(path)
    checkpoints = path / "checkpoints"
    if any(checkpoints.glob("step-*.safetensors")):
        raise CheckpointError(f"{path}: holds checkpoints; resume it instead of starting again")
    remove_stale_temporaries(path, recursive=True)
    for name in _UNSTARTED_FILES:
        (path / name).unlink(missing_ok=True)
    if checkpoints.is_dir():
        for leftover in checkpoints.iterdir():
            if leftover.is_file():
                leftover.unlink()
        checkpoints.rmdir()


def code_version() -> dict[str, Any]:
    """Where the code came from: package and torch versions, git commit and whether the tree was dirty."""
    package_dir = Path(dreamdata.__file__).resolve().parent
    info: dict[str, Any] = {
        "dreamdata": dreamdata.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": sys.argv,
        "git_commit": None,
        "git_dirty": None,
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=package_dir,
                                    capture_output=True, text=True, timeout=10)
            info["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (installed package): versions above still identify the code
    return info


def data_description(train: ImageData, val: ImageData) -> dict:
    """What ``data.json`` (and a checkpoint's ``data`` metadata) records of a run's training data."""
    return {"class_names": train.class_names, "channels": train.channels, "image_size": train.image_size,
            "num_train": len(train), "num_val": len(val), "source": train.source}


def write_run_files(run_dir: Path, config: RunConfig, data_info: dict[str, Any]) -> None:
    """Write the resolved config, code version and data description (atomically)."""
    write_text_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    write_text_atomic(run_dir / VERSION_FILE, json.dumps(code_version(), indent=2) + "\n")
    write_text_atomic(run_dir / DATA_FILE, json.dumps(data_info, indent=2) + "\n")


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run was trained with."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a dreamdata run directory (no {CONFIG_FILE})")
    return config_from_dict(load_yaml(path.read_text(), str(path)) or {})


def read_data_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / DATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {DATA_FILE}; was this run directory written by dreamdata train?")
    return json.loads(path.read_text())


def log_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one record to ``metrics.jsonl``."""
    append_line(run_dir / METRICS_FILE, finite_dumps(record, sort_keys=False))  # NaN: null + a flag


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [record for record in map(_parse_record, path.read_text().splitlines()) if record is not None]


def _parse_record(line: str) -> Optional[dict[str, Any]]:
    """One metrics line, or None for a blank or torn one (a write cut short by a crash or a full disk)."""
    try:
        record = restore_nonfinite(json.loads(line)) if line.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def truncate_metrics(run_dir: Path, after_step: int) -> None:
    """Drop records logged after ``after_step`` (they belong to progress lost since the last checkpoint)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines()
            if (record := _parse_record(line)) is not None and record.get("step", 0) <= after_step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def resolve_run_dir(path: str | Path) -> Path:
    """Accept a run directory (or a checkpoint file inside one) and return the run directory."""
    path = Path(path).expanduser()
    if path.is_file() and path.parent.name == "checkpoints":
        path = path.parent.parent
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run directory")
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: not a dreamdata run directory (no {CONFIG_FILE})")
    return path


def latest_metric(run_dir: Path, key: str) -> Optional[float]:
    for record in reversed(read_metrics(run_dir)):
        if key in record:
            return record[key]
    return None
