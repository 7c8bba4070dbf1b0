"""Saving and loading a trained classifier as safetensors, with what rebuilding it needs in the metadata.

Used for the classifier that filters dreamed images by confidence (``dreamdata dream --filter-classifier``):
the file holds the weights and, as metadata, the network name, channel count, image size and class names,
so it can be checked against the generative model it filters (same classes, same image shape).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from dreamdata.atomic import atomic_path
from dreamdata.classify.networks import build_classifier
from dreamdata.errors import CheckpointError

FORMAT = "dreamdata-classifier-1"


@dataclass
class LoadedClassifier:
    network: nn.Module
    network_name: str
    channels: int
    image_size: int
    class_names: list[str]
    path: Path


def save_classifier(path: str | Path, network: nn.Module, network_name: str, channels: int, image_size: int,
                    class_names: list[str], extra: dict | None = None) -> Path:
    """Write ``network``'s weights and description to ``path`` (atomically)."""
    path = Path(path)
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in network.state_dict().items()}
    metadata = {"format": FORMAT, "network": network_name, "channels": str(channels),
                "image_size": str(image_size), "class_names": json.dumps(list(class_names)),
                "extra": json.dumps(extra or {})}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> LoadedClassifier:
    """Rebuild a classifier saved by :func:`save_classifier`, in eval mode."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such classifier file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected a {FORMAT} file (a classifier saved by dreamdata), metadata "
                              f"says format={metadata.get('format')!r}")
    class_names = json.loads(metadata["class_names"])
    channels = int(metadata["channels"])
    network = build_classifier(metadata["network"], channels, len(class_names))
    try:
        network.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit a {metadata['network']} classifier: {error}") from None
    return LoadedClassifier(network.to(device).eval(), metadata["network"], channels, int(metadata["image_size"]),
                            class_names, path)
