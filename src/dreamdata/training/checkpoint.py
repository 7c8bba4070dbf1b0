"""Checkpoints: weights as safetensors, training state beside them, both written atomically.

``step-NNNNNNNNN.safetensors`` holds the network (``model.*``) and its EMA (``ema.*``) as plain tensors,
with the resolved config and data description in the file's metadata, so a checkpoint can be loaded for
sampling without any pickled code. ``step-NNNNNNNNN.state.pt`` holds what only resuming needs: optimizer
and LR-scheduler state, RNG states, counters. ``latest.json`` names the newest complete pair; it is
written last, so an interrupted save never becomes the checkpoint a resume picks up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from dreamdata.atomic import atomic_path, write_text_atomic
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
                    training_state: dict[str, Any], metadata: dict[str, str], keep: int = 2) -> Path:
    """Write weights + training state for ``step`` and point ``latest.json`` at them."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    tensors = _state_dict_tensors(network, "model.")
    tensors.update(_state_dict_tensors(ema_network, "ema."))
    weights_path = folder / f"{name}.safetensors"
    with atomic_path(weights_path) as temporary:
        save_file(tensors, str(temporary), metadata={"format": FORMAT, "step": str(step), **metadata})
    with atomic_path(folder / f"{name}.state.pt") as temporary:
        torch.save(training_state, temporary)
    write_text_atomic(folder / LATEST_FILE, json.dumps({"step": step, "name": name}) + "\n")
    _delete_old(folder, keep)
    return weights_path


def _delete_old(folder: Path, keep: int) -> None:
    weights = sorted(folder.glob("step-*.safetensors"))
    for old in weights[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_suffix("").with_suffix(".state.pt").unlink(missing_ok=True)


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """Path of the newest complete checkpoint's weights, or None if the run has none yet."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    pointer = folder / LATEST_FILE
    if not pointer.is_file():
        return None
    name = json.loads(pointer.read_text())["name"]
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{pointer} names {name}, but {path} is missing")
    return path


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
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    return LoadedWeights(model=model, ema=ema, metadata=metadata, step=int(metadata["step"]))


def load_training_state(weights_path: Path) -> dict[str, Any]:
    path = Path(weights_path).with_suffix("").with_suffix(".state.pt")
    if not path.is_file():
        raise CheckpointError(f"{path}: training state missing; the checkpoint can be sampled from but not resumed")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict, turning a shape/key mismatch into an error that names the checkpoint."""
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not fit the network built from its config: {error}") from None
