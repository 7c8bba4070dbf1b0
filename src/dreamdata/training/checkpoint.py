"""Checkpoints: weights as safetensors, training state beside them, both written atomically.

``step-NNNNNNNNN.safetensors`` holds the network (``model.*``) and its EMA (``ema.*``) as plain tensors,
with the resolved config and data description in the file's metadata, so a checkpoint can be loaded for
sampling without any pickled code. ``step-NNNNNNNNN.state.pt`` holds what only resuming needs: optimizer
and LR-scheduler state, RNG states, counters. ``latest.json`` names the newest complete pair; it is
written last, so an interrupted save never becomes the checkpoint a resume picks up.

Loading (:func:`load_latest`, used by ``train --resume``, ``sample`` and ``dream`` alike) takes the
checkpoint ``latest.json`` names; if that pointer or the files it names are unreadable (garbage, truncated,
missing), it falls back to the newest checkpoint that loads, and says on stderr which one it used.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from dreamdata.atomic import write_bytes_atomic, write_text_atomic
from dreamdata.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest.json"
FORMAT = "dreamdata-checkpoint-1"


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def _state_dict_tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage, and compiled/DDP modules may alias
    return {f"{prefix}{name}": tensor.detach().to("cpu").contiguous().clone()
            for name, tensor in module.state_dict().items()}


def save_checkpoint(run_dir: Path, step: int, network: nn.Module, ema_network: nn.Module,
                    training_state: dict[str, Any], metadata: dict[str, str], keep: int = 2,
                    protected_steps: Iterable[int] = ()) -> Path:
    """Write weights + training state for ``step`` and point ``latest.json`` at them; then delete all but the
    newest ``keep`` checkpoints (0 = keep all), never one at a step in ``protected_steps``."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    tensors = _state_dict_tensors(network, "model.")
    tensors.update(_state_dict_tensors(ema_network, "ema."))
    weights_path = folder / f"{name}.safetensors"
    state_path = folder / f"{name}.state.pt"
    state_bytes = io.BytesIO()
    torch.save(training_state, state_bytes)
    try:
        # serialized in memory first, so a full disk is a plain ENOSPC (a DiskFullError naming the file)
        write_bytes_atomic(weights_path, safetensors_bytes(
            tensors, metadata={"format": FORMAT, "step": str(step), **metadata}))
        write_bytes_atomic(state_path, state_bytes.getvalue())
        write_text_atomic(folder / LATEST_FILE, json.dumps({"step": step, "name": name}) + "\n")
    except BaseException:
        # no half pair: latest.json still names the previous checkpoint, which stays
        if _pointer_name(folder) != name:
            weights_path.unlink(missing_ok=True)
            state_path.unlink(missing_ok=True)
        raise
    _delete_old(folder, keep, {checkpoint_name(int(step)) for step in protected_steps})
    return weights_path


def _delete_old(folder: Path, keep: int, protected: set[str]) -> None:
    weights = sorted(folder.glob("step-*.safetensors"))
    for old in weights[:-keep] if keep > 0 else []:
        if old.stem in protected:
            continue
        old.unlink(missing_ok=True)
        old.with_suffix("").with_suffix(".state.pt").unlink(missing_ok=True)


def _pointer_name(folder: Path) -> Optional[str]:
    """The checkpoint name ``latest.json`` holds, or None if it is missing or unreadable."""
    try:
        name = json.loads((folder / LATEST_FILE).read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _candidates(folder: Path) -> tuple[list[Path], list[str]]:
    """Weights files to try, best first (the one ``latest.json`` names, then newest first), and what is
    wrong with the pointer, if anything."""
    pointer = folder / LATEST_FILE
    on_disk = sorted(folder.glob("step-*.safetensors"), reverse=True)  # zero-padded: newest first
    problems: list[str] = []
    if not pointer.is_file():
        if on_disk:
            problems.append(f"{pointer} is missing")
        return on_disk, problems
    name = _pointer_name(folder)
    if name is None:
        problems.append(f"{pointer} is not a readable checkpoint pointer")
        return on_disk, problems
    named = folder / f"{name}.safetensors"
    if named.parent != folder or not named.is_file():
        problems.append(f"{pointer} names {name}, but {named} is missing")
        return on_disk, problems
    return [named] + [path for path in on_disk if path != named], problems


@dataclass
class LoadedCheckpoint:
    path: Path  # the weights file
    weights: "LoadedWeights"
    state: Optional[dict[str, Any]]  # training state, when asked for


def load_latest(run_dir: Path, device: str | torch.device = "cpu", with_state: bool = False,
                report: bool = True) -> Optional[LoadedCheckpoint]:
    """The newest intact checkpoint of a run (with its training state if ``with_state``), or None if it
    has none yet.

    ``latest.json``'s checkpoint is taken if it loads. Otherwise each older checkpoint is tried, newest
    first, and the one used is reported on stderr (``report``) with what was wrong; if none loads, a
    CheckpointError lists why.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    candidates, problems = _candidates(folder)
    if not candidates and not problems:
        return None
    for path in candidates:
        try:
            weights = load_weights(path, device=device)
            state = load_training_state(path, expect_step=weights.step) if with_state else None
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if problems and report:
            print(f"warning: {'; '.join(problems)}; using the newest intact checkpoint, {path}",
                  file=sys.stderr, flush=True)
        return LoadedCheckpoint(path=path, weights=weights, state=state)
    raise CheckpointError(f"{folder}: no intact checkpoint to load ({'; '.join(problems)})")


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """Path of the newest intact checkpoint's weights (see :func:`load_latest`), or None if none yet."""
    loaded = load_latest(run_dir, report=False)
    return None if loaded is None else loaded.path


@dataclass
class LoadedWeights:
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    metadata: dict[str, str]
    step: int


def load_weights(path: Path, device: str | torch.device = "cpu") -> LoadedWeights:
    """Read a checkpoint's weights and metadata, with an error naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected a {FORMAT} file, metadata says format={metadata.get('format')!r}")
    if not metadata.get("step", "").isdigit():
        raise CheckpointError(f"{path}: metadata step={metadata.get('step')!r} is not a step number")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    return LoadedWeights(model=model, ema=ema, metadata=metadata, step=int(metadata["step"]))


def load_training_state(weights_path: Path, expect_step: Optional[int] = None) -> dict[str, Any]:
    """The ``.state.pt`` beside a weights file, with an error naming it if it is missing or unreadable."""
    path = Path(weights_path).with_suffix("").with_suffix(".state.pt")
    if not path.is_file():
        raise CheckpointError(f"{path}: training state missing; the checkpoint can be sampled from but not resumed")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable training state (truncated or corrupt: {reason})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: not a dreamdata training state (no step counter)")
    if expect_step is not None and state["step"] != expect_step:
        raise CheckpointError(f"{path}: holds step {state['step']}, its weights file step {expect_step}")
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict, turning a shape/key mismatch into an error that names the checkpoint."""
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not fit the network built from its config: {error}") from None
