"""Inception-v3 features for FID, KID, precision/recall and Inception Score — one documented protocol.

The protocol (TF-FID, Heusel et al. 2017, as pytorch-fid / torch-fidelity / the shared bench compute it):

1. images are **uint8** (samples are quantised to 8 bits before any feature is taken, so a model is not
   rewarded for values no image file could hold);
2. grayscale is repeated to 3 channels;
3. pixels are scaled to ``x / 127.5 - 1`` and resized to 299×299 with **bilinear interpolation,
   align_corners=False and no antialiasing** (torchmetrics switched antialias on by default in 1.8, which
   changes every FID; it is pinned off here);
4. the network is Inception-v3 with the 2015-12-05 TensorFlow FID weights; features are its 2048-d pool.

Two sources of that network:

* a local **TorchScript** file (``--fid-weights PATH``, the ``evaluation.fid_weights`` config key or the
  ``DREAMDATA_FID_WEIGHTS`` environment variable) taking ``[N, 3, 299, 299]`` floats in ``[-1, 1]`` and
  returning ``[N, 2048]`` — e.g. the file ``shared/tools/fid-inception-weights`` prints. Such a file has no
  classifier head, so it gives no logits and no Inception Score;
* otherwise **torch-fidelity**'s ``inception-v3-compat`` (downloaded once by torch-fidelity), which also
  gives the 1008-way logits the Inception Score needs.

Any object with ``name`` and ``__call__(uint8 [N, C, H, W]) -> ImageFeatures`` can stand in (tests use a tiny
one); ``name`` enters feature-cache keys, so two extractors must never share one.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import torch
import torch.nn.functional as F

from dreamdata.errors import ConfigError, DreamdataError

__all__ = ["FID_WEIGHTS_ENV", "FeatureExtractor", "ImageFeatures", "TorchFidelityInception",
           "TorchScriptExtractor", "inception_input", "resolve_extractor"]

FID_WEIGHTS_ENV = "DREAMDATA_FID_WEIGHTS"
INCEPTION_SIZE = 299


class MetricsUnavailable(DreamdataError):
    """A metric cannot be computed with what is installed / given (names what is missing)."""


@dataclass
class ImageFeatures:
    """Per-image features: ``pool`` float32 ``[N, D]`` and, when the extractor has a classifier head,
    ``logits`` float32 ``[N, K]`` (Inception Score), else ``None``."""

    pool: torch.Tensor
    logits: Optional[torch.Tensor] = None
    seconds: float = 0.0  # time spent extracting (0 when read from the cache)

    def __len__(self) -> int:
        return int(self.pool.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageFeatures":
        return ImageFeatures(self.pool[index], None if self.logits is None else self.logits[index])


class FeatureExtractor(Protocol):
    name: str  # identifies the network and its weights (enters cache keys)

    def __call__(self, images: torch.Tensor) -> ImageFeatures:
        """uint8 ``[N, C, H, W]`` (C = 1 or 3) -> features of each image."""
        ...


def check_uint8_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"feature extraction expects uint8 images [N, C, H, W] with C = 1 or 3, got "
                         f"{images.dtype} {list(images.shape)}")


def inception_input(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float ``[N, 3, size, size]`` in ``[-1, 1]``: steps 2–3 of the protocol."""
    check_uint8_images(images)
    x = images.float() / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TorchScriptExtractor:
    """A TorchScript feature network loaded from ``path`` (input: floats ``[N, 3, 299, 299]`` in [-1, 1]).

    ``input_size`` may be smaller for toy extractors; the Inception protocol uses 299.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", input_size: int = INCEPTION_SIZE):
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"FID weights file {path} does not exist (set by --fid-weights, "
                              f"evaluation.fid_weights or ${FID_WEIGHTS_ENV}; expected a TorchScript "
                              "Inception-v3 returning [N, 2048] pool features)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as error:
            raise ConfigError(f"FID weights file {path} is not a TorchScript module: {error}") from None
        self.device = torch.device(device)
        self.input_size = input_size
        self.name = f"torchscript:{file_sha1(path)}:{input_size}"
        self.path = path

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> ImageFeatures:
        x = inception_input(images, self.input_size).to(self.device)
        pool = self.module(x)
        if pool.dim() != 2 or pool.shape[0] != images.shape[0]:
            raise ValueError(f"{self.path}: expected [N, D] features for {images.shape[0]} images, got "
                             f"{list(pool.shape)}")
        return ImageFeatures(pool.float().cpu())


class TorchFidelityInception:
    """torch-fidelity's Inception-v3 (2015-12-05 TF weights, TF-1.x-compatible bilinear resize inside),
    giving 2048-d pool features and the 1008-way unbiased logits. Downloads its weights on first use."""

    name = "torch-fidelity:inception-v3-compat"

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise MetricsUnavailable(
                "no FID network: give a local TorchScript Inception with --fid-weights PATH (or "
                f"${FID_WEIGHTS_ENV}), or `pip install torch-fidelity` to download the standard one") from None
        self.device = torch.device(device)
        self.module = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).to(device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> ImageFeatures:
        check_uint8_images(images)
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        pool, logits = self.module(images.to(self.device))
        return ImageFeatures(pool.float().cpu(), logits.float().cpu())


def resolve_extractor(fid_weights: Optional[str] = None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The extractor the protocol names: ``fid_weights`` if given, else ``$DREAMDATA_FID_WEIGHTS``, else
    torch-fidelity's download."""
    path = fid_weights or os.environ.get(FID_WEIGHTS_ENV)
    if path:
        return TorchScriptExtractor(path, device=device)
    return TorchFidelityInception(device=device)
