"""The manifest of a dreamed dataset: what made it, how far it got, and a check that a re-run matches.

``DIR/manifest.json`` holds

* ``spec`` - everything that determines the images: the checkpoint's SHA-256 (and path, step, weights),
  the classes, images per class, sampler, steps, spacing, guidance (and its noise-level interval), seed,
  chunk size, filtering. Two
  runs with equal specs write the same images, which is what makes resuming safe;
* ``status`` - ``incomplete`` while chunks are being generated, ``complete`` once the dataset files are
  written; and, when complete, ``counts`` per class, ``seconds`` of generation, the files written.

Resuming into a directory whose manifest has a different spec would mix two datasets, so it is an error
that names every key that differs (a different checkpoint shows up as ``checkpoint_sha256``) - with one
exception: a spec that differs only by a larger ``per_class`` *grows* the dataset. Image ``k`` of class
``c`` depends only on ``(seed, k * num_classes + c)`` and the work list is k-major, so the images already
dreamed are the first ones of the larger set and are kept (:func:`grows`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dreamdata.atomic import write_text_atomic
from dreamdata.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "dreamdata-dream-1"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (checkpoints are hashed to tie a dataset to its exact weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class DreamSpec:
    """Everything that determines a dreamed dataset's images (see the module docstring)."""

    checkpoint_sha256: str
    checkpoint: str
    step: int
    weights: str  # ema | raw
    class_names: list[str]  # the model's classes, in label order
    classes: list[int]  # the model class indices dreamed, in order
    per_class: int
    sampler: str
    steps: int
    spacing: str
    guidance: float
    seed: int
    chunk: int  # images per chunk file
    channels: int
    image_size: int
    # guidance only at noise levels sigma_lo < sigma <= sigma_hi (Kynkäänniemi et al. 2024); None = every step.
    # Manifests from before the option have no such key, which compares equal to None, so they still resume.
    guidance_interval: list[float] | None = None
    keep_top: float | None = None  # keep this fraction per class, by the filter classifier's confidence
    # the network's arithmetic (dreamdata.sampling.precision): "bf16", or None = fp32. None rather than "fp32"
    # so that manifests from before the option (no such key) still resume
    precision: str | None = None
    filter_classifier_sha256: str | None = None
    # spacing "searched": the grid `dreamdata search-grid` stored for the checkpoint (a later search may change it,
    # so a resume checks it); None for the formula spacings and for manifests from before the option
    searched_timesteps: list[int] | None = None
    # autoguidance (Karras et al. 2024): the guide checkpoint's hash and path and the weight w; None for none
    autoguide_sha256: str | None = None
    autoguide_checkpoint: str | None = None
    autoguide_weight: float | None = None
    sample_index: str = field(default="k * num_classes + class (k = position within the class)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest in ``out_dir``, or None if there is none yet."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "spec" not in manifest:
        raise DataError(f"{path}: not a dreamdata dream manifest (expected format {FORMAT!r} with a 'spec')")
    return manifest


def differing_keys(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The spec keys whose values differ (the checkpoints' paths may; their hashes are compared instead)."""
    return [key for key in sorted(set(stored) | set(wanted))
            if stored.get(key) != wanted.get(key) and key not in ("checkpoint", "autoguide_checkpoint")]


def spec_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: stored -> wanted`` for every key whose value differs."""
    return [f"{key}: {stored.get(key)!r} -> {wanted.get(key)!r}" for key in differing_keys(stored, wanted)]


def grows(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether spec ``wanted`` asks for the same images as ``stored`` plus more of each class (only a larger
    ``per_class``), so that a dataset dreamed for ``stored`` can be grown into one for ``wanted``."""
    return (differing_keys(stored, wanted) == ["per_class"]
            and int(wanted["per_class"]) > int(stored["per_class"]))


def check_resumable(out_dir: str | Path, spec: DreamSpec) -> dict[str, Any] | None:
    """The existing manifest if ``spec`` can resume it (same spec) or grow it (:func:`grows`), else an error.

    Returns None when ``out_dir`` has no manifest. The checkpoint's *path* may differ (a moved run
    directory); its hash may not.
    """
    manifest = read_manifest(out_dir)
    if manifest is None:
        # hidden entries count too: chunk files without their manifest belong to an unknown run
        if Path(out_dir).is_dir() and any(Path(out_dir).iterdir()):
            raise DataError(f"{out_dir}: exists, is not empty and has no {MANIFEST}; refusing to write a dreamed "
                            "dataset among other files (give an empty or new --out)")
        return None
    differences = spec_differences(manifest["spec"], spec.to_dict())
    if differences and not grows(manifest["spec"], spec.to_dict()):
        raise DataError(f"{Path(out_dir) / MANIFEST}: was written by a different dream run, so this one cannot "
                        f"resume it; differs in {'; '.join(differences)} (use another --out, or the same model and "
                        "arguments; only a larger --per-class may grow a dataset)")
    return manifest


def write_manifest(out_dir: str | Path, spec: DreamSpec, status: str, **extra: Any) -> Path:
    """Write ``manifest.json`` atomically."""
    path = Path(out_dir) / MANIFEST
    record = {"format": FORMAT, "status": status, "spec": spec.to_dict(), **extra}
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path
