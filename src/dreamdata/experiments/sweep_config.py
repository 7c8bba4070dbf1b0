"""A sweep file: a base run config, training axes (arms), sampling axes (cells) and the metrics to score.

An experiment is data, not code (a base config plus a grid of overrides, as Hydra's multirun). A sweep
file is YAML with these keys::

    name: schedules-and-steps
    base: demo                       # preset name or run-config YAML (a relative path is tried from the
                                     # current directory, then from the sweep file's folder)
    overrides: [train.steps=400]     # KEY=VALUE applied to the base (every arm)
    train_axes:                      # run-config key -> values; every combination is one arm
      process.schedule: [linear, cosine]
    arms:                            # or: an explicit list of arms, each {name: ..., KEY: value, ...},
      - {name: cosine, process.schedule: cosine}   # or {name: ..., run: DIR} for a run trained elsewhere
    sampling:                        # the fixed sampling settings (every cell), see SAMPLING_DEFAULTS
      guidance: 1.8
      guidance_interval: [0.28, 5.42]  # guide only at noise levels 0.28 < sigma <= 5.42 (null: every step)
      autoguide: 1.0                 # autoguidance weight (0: none), the guide being the arm's own...
      autoguide_step: 500            # ...checkpoint at this training step (dreamdata.sampling.autoguidance)
    sampling_axes:                   # sampling key -> values; every combination x checkpoint is one cell
      sampler: [ddpm]
      steps: [500, 100]
    cells:                           # or: an explicit list of sampling settings, one per cell; a cell
                                     # may name its own checkpoints ({guidance: 0, checkpoints: all})
    checkpoints: [last]              # which checkpoints of each arm: last, all, or training steps
    metrics: [fid, kid]              # see METRICS
    evaluation: {n: 2000, ref_split: test, ref_n: 2000}
    figures: {loss_skip_first: 0, loss_log: false}

An unconditional arm samples every cell with w = 0, so cells that differ only in guidance collapse into one
(and so does a guidance interval at w = 0). ``guidance_interval: [lo, hi]`` applies the guidance only at EDM
noise levels ``lo < sigma <= hi`` (Kynkäänniemi et al. 2024, see :mod:`dreamdata.sampling.guidance`); left
out or null, a cell is exactly what it was before the key existed (same key, same result line).
A sampling value may also be a mapping from process kind to value (``sampler: {gaussian: ddim, blur:
cold-improved}``), so arms with different processes share one sweep. ``steps: null`` means every step T.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from dreamdata.config import build_dataclass, load_yaml, parse_override
from dreamdata.errors import ConfigError
from dreamdata.precisions import SAMPLING_PRECISIONS, expected_sampling_precision

__all__ = ["METRICS", "SAMPLING_DEFAULTS", "SweepConfig", "SweepEvaluation", "SweepFigures", "load_sweep",
           "parse_sweep"]

METRICS = ("fid", "kid", "is", "pr", "per_class_fid", "reconstruction", "restoration", "blur_robustness",
           "held_out_loss", "clip", "nll")
"""What a cell can score: FID/KID/IS/precision-recall/per-class FID of its samples (one feature pass);
``reconstruction`` (noise test images to t, denoise with DDIM: RMSE/SSIM/PSNR and ε-MSE per bucket of t);
``restoration`` (degrade test images to t = T and restore with the cell's sampler: RMSE/SSIM/PSNR);
``blur_robustness`` (blur test images with a Gaussian of σ, noise to t, denoise; scored against the sharp
originals); ``held_out_loss`` (the run's held-out loss at the checkpoint); ``clip`` (CLIP score per class);
``nll`` (the variational bound in bits/dim on ``evaluation.nll_n`` test images, as ``evaluate --nll``: once
per checkpoint, whatever the sampling cell)."""

SAMPLING_DEFAULTS: dict[str, Any] = {
    "sampler": None,  # None: the process's default (ddpm for Gaussian runs, cold-improved for blur)
    "steps": 100,  # None: every step T
    "spacing": "linspace",
    "guidance": 0.0,
    "guidance_interval": None,  # [sigma_lo, sigma_hi]: guide only where sigma_lo < sigma <= sigma_hi (None: every step)
    "eta": None,  # DDIM's eta (ddim only)
    "x0_clip": "static",
    "start_noise": None,  # blur runs: start noise std (None = the run's own)
    "precision": "fp32",  # the network's arithmetic while sampling: fp32 or bf16 (dreamdata.sampling.precision)
    "autoguide": 0.0,  # autoguidance weight w (Karras et al. 2024; 0: none), guided by the arm's own checkpoint at...
    "autoguide_step": None,  # ...this training step (dreamdata.sampling.autoguidance)
}
TOP_KEYS = ("name", "base", "overrides", "train_axes", "arms", "sampling", "sampling_axes", "cells",
            "checkpoints", "metrics", "evaluation", "figures", "table", "device", "num_threads")


@dataclass
class SweepEvaluation:
    """How every cell is scored, the same way (changing any of these invalidates finished cells)."""

    n: int = 2000  # samples per cell (class k mod K for sample k)
    seed: int = 0  # per-sample seeds: sample k's noise comes from (seed, k) in every cell
    batch: int = 250  # sampling batch (does not change the images)
    ref_split: str = "test"
    ref_n: int = 2000  # reference images (a seeded subset of the split)
    fid_weights: Optional[str] = None  # local TorchScript Inception (None: $DREAMDATA_FID_WEIGHTS)
    clip_model: Optional[str] = None  # for the clip metric
    mosaic_per_class: int = 8  # samples per class kept for the mosaics
    reconstruction_count: int = 256  # test images for reconstruction / restoration / blur_robustness
    blur_sigmas: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0])
    blur_t: list[int] = field(default_factory=lambda: [50, 100, 200])  # training indices noised to
    blur_kernel: int = 0  # kernel size for blur_robustness (0: 2 * ceil(3 sigma) + 1)
    trajectory_every: int = 0  # snapshot strips of the reverse process every K steps (0 = none)
    nll_n: int = 1000  # nll: test images (a seeded subset of the split, as evaluate --nll --n)
    nll_steps: Optional[int] = 100  # nll: KL terms evaluated (strided estimate); None = all T - 1


@dataclass
class SweepFigures:
    loss_skip_first: int = 0  # loss curves: drop the first N logged training steps' worth of records
    loss_log: bool = False  # loss curves on a log scale
    metric: Union[str, list[str]] = "fid"  # drawn against guidance / step / sampling steps; a list: one panel each


@dataclass
class ArmSpec:
    """One training arm: a name and either overrides of the base config or a run trained elsewhere."""

    name: str
    overrides: dict[str, Any]
    run: Optional[str] = None


@dataclass
class SweepConfig:
    name: str
    base: Optional[str]
    overrides: list[str]
    arms: list[ArmSpec]
    cells: list[dict[str, Any]]  # sampling settings, defaults filled in (and a cell's own "checkpoints")
    checkpoints: list[Any]  # "last", "all" or ints
    metrics: list[str]
    evaluation: SweepEvaluation
    figures: SweepFigures
    table: str = "default"  # "default" or "cold-study" (the cold-diffusion report's table)
    device: str = "cpu"
    num_threads: Optional[int] = None
    source: str = ""

    def shared_settings(self) -> dict[str, Any]:
        """What every finished cell depends on besides its own axes: a change here invalidates them."""
        settings = asdict(self.evaluation)
        for key in ("batch", "mosaic_per_class", "trajectory_every"):  # do not change any number
            settings.pop(key)
        if "nll" not in self.metrics:  # sweeps without the bound keep the settings they were finished with
            settings.pop("nll_n"), settings.pop("nll_steps")
        return {"metrics": sorted(self.metrics), **{f"evaluation.{k}": v for k, v in settings.items()}}


def _axis_values(origin: str, key: str, values: Any) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{origin}: axis {key!r} must be a non-empty list of values, got {values!r}")
    return values


def _product(origin: str, axes: dict[str, Any]) -> list[dict[str, Any]]:
    combos: list[dict[str, Any]] = [{}]
    for key, values in axes.items():
        combos = [{**combo, key: value} for combo in combos for value in _axis_values(origin, key, values)]
    return combos


def _arm_name(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "base"
    parts = []
    for key, value in overrides.items():
        shown = "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        parts.append(f"{key.split('.')[-1]}-{shown}")
    return "_".join(parts).replace("/", "-").replace(" ", "")


def _parse_arms(origin: str, tree: dict[str, Any]) -> list[ArmSpec]:
    if tree.get("arms") is not None and tree.get("train_axes"):
        raise ConfigError(f"{origin}: give either 'train_axes' (a product) or 'arms' (a list), not both")
    if tree.get("arms") is None:
        axes = tree.get("train_axes") or {}
        if not isinstance(axes, dict):
            raise ConfigError(f"{origin}: 'train_axes' must map run-config keys to lists of values")
        return [ArmSpec(_arm_name(combo), combo) for combo in _product(origin + " train_axes", axes)]
    arms = tree["arms"]
    if not isinstance(arms, list) or not arms:
        raise ConfigError(f"{origin}: 'arms' must be a non-empty list of {{name: ..., KEY: value}} entries")
    specs = []
    for index, entry in enumerate(arms):
        if not isinstance(entry, dict):
            raise ConfigError(f"{origin}: arms[{index}] must be a mapping, got {entry!r}")
        entry = dict(entry)
        run = entry.pop("run", None)
        name = str(entry.pop("name", _arm_name(entry)))
        specs.append(ArmSpec(name, entry, None if run is None else str(run)))
    names = [spec.name for spec in specs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"{origin}: arm name {duplicated[0]!r} is used twice")
    return specs


def _check_sampling(origin: str, settings: dict[str, Any]) -> dict[str, Any]:
    settings = dict(settings)
    checkpoints = settings.pop("checkpoints", None)  # a cell may score other checkpoints than the sweep's
    unknown = sorted(set(settings) - set(SAMPLING_DEFAULTS))
    if unknown:
        raise ConfigError(f"{origin}: unknown sampling key {unknown[0]!r} (known: {', '.join(SAMPLING_DEFAULTS)})")
    for key, value in settings.items():
        for option in _values(value):
            if isinstance(option, float) and not math.isfinite(option):
                raise ConfigError(f"{origin}: sampling key {key!r} = {option!r}: expected a finite number")
            if key == "guidance" and option is not None and not (isinstance(option, (int, float)) and option >= 0):
                raise ConfigError(f"{origin}: guidance {option!r}: expected a number >= 0")
            if key == "guidance_interval":
                from dreamdata.sampling.guidance import check_guidance_interval

                try:
                    check_guidance_interval(option, "guidance_interval")
                except ValueError as error:
                    raise ConfigError(f"{origin}: {error}") from None
            if key == "precision" and option not in SAMPLING_PRECISIONS:
                raise ConfigError(f"{origin}: precision {option!r}: expected {expected_sampling_precision()}")
            if key == "steps" and option is not None and not (isinstance(option, int) and option >= 1):
                raise ConfigError(f"{origin}: steps {option!r}: expected a positive integer or null (every step)")
            if key == "autoguide" and not (isinstance(option, (int, float)) and not isinstance(option, bool)
                                           and option >= 0):
                raise ConfigError(f"{origin}: autoguide {option!r}: expected a weight >= 0 (0: no autoguidance)")
            if key == "autoguide_step" and option is not None and not (
                    isinstance(option, int) and not isinstance(option, bool) and option >= 0):
                raise ConfigError(f"{origin}: autoguide_step {option!r}: expected a training step of the arm's run "
                                  "(a checkpoint to guide with) or null")
    resolved = {**SAMPLING_DEFAULTS, **settings}
    for weight in _values(resolved["autoguide"]):
        if weight and resolved["autoguide_step"] is None:
            raise ConfigError(f"{origin}: autoguide {weight!r} needs autoguide_step: the training step of the "
                              "arm's checkpoint that guides (e.g. autoguide_step: 500)")
    if checkpoints is not None:
        resolved["checkpoints"] = _parse_checkpoints(origin, checkpoints)
    return resolved


def _values(value: Any) -> list[Any]:
    """A sampling value's options: the per-process values of a mapping, else the value itself."""
    return list(value.values()) if isinstance(value, dict) else [value]


def _parse_cells(origin: str, tree: dict[str, Any]) -> list[dict[str, Any]]:
    fixed = tree.get("sampling") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{origin}: 'sampling' must map sampling keys to values")
    if tree.get("cells") is not None and tree.get("sampling_axes"):
        raise ConfigError(f"{origin}: give either 'sampling_axes' (a product) or 'cells' (a list), not both")
    if tree.get("cells") is not None:
        listed = tree["cells"]
        if not isinstance(listed, list) or not listed or not all(isinstance(c, dict) for c in listed):
            raise ConfigError(f"{origin}: 'cells' must be a non-empty list of sampling settings")
        combos = listed
    else:
        axes = tree.get("sampling_axes") or {}
        if not isinstance(axes, dict):
            raise ConfigError(f"{origin}: 'sampling_axes' must map sampling keys to lists of values")
        combos = _product(origin + " sampling_axes", axes)
    return [_check_sampling(origin, {**fixed, **combo}) for combo in combos]


def _parse_checkpoints(origin: str, value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item not in ("last", "all") and not (isinstance(item, int) and not isinstance(item, bool) and item >= 1):
            raise ConfigError(f"{origin}: checkpoints {item!r}: expected last, all or a training step >= 1")
    return values


def parse_sweep(tree: dict[str, Any], origin: str, overrides: list[str] = ()) -> SweepConfig:
    """A :class:`SweepConfig` from a sweep file's mapping; ``overrides`` (``KEY=VALUE``) go to the base run
    config, or to the sweep's own sections when they start with ``evaluation.``, ``figures.``, ``sampling.``
    or name a top-level key (``name=...``, ``metrics=[fid]``)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    tree = dict(tree)
    unknown = sorted(set(tree) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{origin}: unknown key {unknown[0]!r} (known: {', '.join(TOP_KEYS)})")
    base_overrides = [str(item) for item in (tree.get("overrides") or [])]
    for text in overrides:
        key, value = parse_override(text)
        section, _, rest = key.partition(".")
        if section in ("evaluation", "figures", "sampling") and rest:
            tree[section] = {**(tree.get(section) or {}), rest: value}
        elif key in TOP_KEYS and key not in ("base", "overrides"):
            tree[key] = value
        else:
            base_overrides.append(text)
    metrics = tree.get("metrics", ["fid", "kid"])
    metrics = metrics if isinstance(metrics, list) else [metrics]
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ConfigError(f"{origin}: unknown metric {bad[0]!r} (known: {', '.join(METRICS)})")
    table = str(tree.get("table", "default"))
    if table not in ("default", "cold-study"):
        raise ConfigError(f"{origin}: table {table!r}: expected default or cold-study")
    evaluation = build_dataclass(SweepEvaluation, tree.get("evaluation") or {}, "evaluation.")
    for key in ("n", "ref_n", "batch", "reconstruction_count", "nll_n"):
        if getattr(evaluation, key) < 1:
            raise ConfigError(f"{origin}: evaluation.{key} must be >= 1, got {getattr(evaluation, key)}")
    if evaluation.nll_steps is not None and not (isinstance(evaluation.nll_steps, int)
                                                 and not isinstance(evaluation.nll_steps, bool)
                                                 and evaluation.nll_steps >= 1):
        raise ConfigError(f"{origin}: evaluation.nll_steps must be a positive integer or null (every KL term), "
                          f"got {evaluation.nll_steps!r}")
    return SweepConfig(
        name=str(tree.get("name") or Path(origin).stem), base=tree.get("base"), overrides=base_overrides,
        arms=_parse_arms(origin, tree), cells=_parse_cells(origin, tree),
        checkpoints=_parse_checkpoints(origin, tree.get("checkpoints", "last")), metrics=list(metrics),
        evaluation=evaluation, figures=build_dataclass(SweepFigures, tree.get("figures") or {}, "figures."),
        table=table, device=str(tree.get("device", "cpu")), num_threads=tree.get("num_threads"), source=origin)


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """Read and check a sweep file (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"sweep file {path}: no such file")
    tree = load_yaml(path.read_text(), f"sweep file {path}") or {}
    config = parse_sweep(tree, f"sweep file {path}", overrides)
    if config.base and not Path(config.base).expanduser().is_file() and (path.parent / config.base).is_file():
        config.base = str(path.parent / config.base)
    return config
