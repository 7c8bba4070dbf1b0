"""Rebuild a trained network and its process from a run directory or checkpoint, for sampling.

For a GAN run (``process.kind: gan``) the network is the generator: its EMA (``ema.*``, with batch-norm
statistics re-estimated for the averaged weights when it was saved) or, with ``use_ema=False``, the live
one (``model.generator.*``); the discriminator is only needed to resume training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from dreamdata.config import RunConfig, config_from_dict
from dreamdata.distill.record import DistilledSampler, read_distilled
from dreamdata.errors import CheckpointError
from dreamdata.process import build_process
from dreamdata.training import checkpoint as ckpt
from dreamdata.training import run_dir as rd
from dreamdata.training.objectives import build_networks


@dataclass
class TrainedModel:
    network: torch.nn.Module
    process: object
    config: RunConfig
    class_names: list[str]
    step: int
    checkpoint: Path
    # a progressively distilled student: the one sampler it was distilled for (None for any other checkpoint)
    distilled: Optional[DistilledSampler] = None
    image_shape: tuple[int, int, int] = (0, 0, 0)  # (channels, height, width) of the images it was trained on


def load_trained(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a run's latest checkpoint (or the given ``.safetensors`` file) in eval mode."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        weights_path = path
        weights = ckpt.load_weights(weights_path, device=device)
    else:
        run_dir = rd.resolve_run_dir(path)
        loaded = ckpt.load_latest(run_dir, device=device)
        if loaded is None:
            raise CheckpointError(f"{run_dir}: the run has no checkpoint yet")
        weights_path, weights = loaded.path, loaded.weights
    try:
        config = config_from_dict(json.loads(weights.metadata["config"]))
        data = json.loads(weights.metadata["data"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{weights_path}: metadata lacks a readable config/data description ({error})") from None
    num_classes = len(data["class_names"]) if config.model.class_conditional else 0
    network = build_networks(config, data["channels"], data["image_size"], num_classes)
    if config.process.kind == "gan":
        if not use_ema:
            ckpt.load_into(network, weights.model, weights_path)
        network = network.generator
        if use_ema:
            ckpt.load_into(network, weights.ema, weights_path)
    else:
        ckpt.load_into(network, weights.ema if use_ema else weights.model, weights_path)
    network = network.to(device).eval()
    process = build_process(config.process)
    if hasattr(process, "searched_grids"):  # Gaussian diffusion: the grids searched for this checkpoint
        from dreamdata.sampling.grid_store import grids_for_checkpoint

        process.searched_grids = grids_for_checkpoint(weights_path, "ema" if use_ema else "model")
    return TrainedModel(network=network, process=process, config=config,
                        class_names=data["class_names"], step=weights.step, checkpoint=weights_path,
                        distilled=read_distilled(weights.metadata, weights_path),
                        image_shape=(int(data["channels"]), int(data["image_size"]), int(data["image_size"])))
