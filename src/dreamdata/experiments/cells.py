"""Arms and cells of a sweep: what is trained once, and what is sampled and scored once.

An **arm** is one training run: the base config with one combination of the training axes (or a run
trained elsewhere). A **cell** is one (arm, checkpoint, sampling settings) triple; its key names all
three, so finished cells are recognised by key on every re-run and a new axis value only adds keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from dreamdata.config import RunConfig, build_dataclass, config_tree, merge_trees, set_dotted, validate
from dreamdata.errors import ConfigError
from dreamdata.experiments.sweep_config import SAMPLING_DEFAULTS, ArmSpec, SweepConfig

__all__ = ["Arm", "Cell", "MACHINE_KEYS", "arm_config", "cell_slug", "comparable_config", "resolve_sampling"]

MACHINE_KEYS = ("name", "runs_dir", "train.device", "train.num_threads", "train.progress")
"""Run-config keys that say where and how fast a run trains, not what it learns: they may differ
between the machine that trained an arm and the one that resumes the sweep."""


@dataclass
class Arm:
    name: str
    axes: dict[str, Any]  # the training-axis values (or the explicit arm's overrides)
    config: RunConfig
    run_dir: Path
    external: bool = False  # a run trained elsewhere (``run: DIR``): used as it is, never trained


@dataclass
class Cell:
    arm: str
    checkpoint_step: int
    sampling: dict[str, Any]  # resolved: sampler and steps filled in for the arm's process
    key: str  # "<arm>/step-<N>/<slug>"


def comparable_config(config: RunConfig) -> dict[str, Any]:
    """The config as a flat ``{dotted.key: value}`` without :data:`MACHINE_KEYS`."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        else:
            flat[prefix[:-1]] = node

    walk("", config.to_dict())
    return {key: value for key, value in flat.items() if key not in MACHINE_KEYS}


def arm_config(sweep: SweepConfig, spec: ArmSpec, out_dir: Path) -> Arm:
    """Resolve an arm: base <- sweep overrides <- the arm's axis values <- where and how it trains.

    Checkpoints other than the last are kept (``train.keep_checkpoints=0``) when the sweep scores more
    than the last one."""
    if spec.run is not None:
        from dreamdata.training.run_dir import read_run_config, resolve_run_dir

        run_dir = resolve_run_dir(spec.run)
        return Arm(spec.name, {"run": str(spec.run)}, read_run_config(run_dir), run_dir, external=True)
    tree = config_tree(sweep.base, sweep.overrides)
    for key, value in spec.overrides.items():  # a mapping value is merged into its section, not replacing it
        update: dict[str, Any] = {}
        set_dotted(update, key, value)
        tree = merge_trees(tree, update)
    if any(cell.get("checkpoints", sweep.checkpoints) != ["last"] for cell in sweep.cells):
        set_dotted(tree, "train.keep_checkpoints", 0)
    for key, value in (("name", spec.name), ("train.device", sweep.device), ("train.progress", False),
                       ("train.num_threads", sweep.num_threads)):
        set_dotted(tree, key, value)
    try:
        config = build_dataclass(RunConfig, tree, "")
        validate(config)
    except ConfigError as error:
        raise ConfigError(f"{sweep.source}: arm {spec.name!r}: {error}") from None
    return Arm(spec.name, dict(spec.overrides), config, out_dir / "arms" / spec.name)


def resolve_sampling(settings: dict[str, Any], process_kind: str, num_steps: int, process,
                     conditional: bool = True, distilled=None) -> dict[str, Any]:
    """One cell's sampling settings for an arm: per-process values picked, the default sampler and
    ``steps: null`` (every step T) filled in, steps capped at T, guidance 0 for an unconditional arm. A GAN
    arm samples in one generator pass whatever the diffusion settings say (sampler ``gan``, 1 step, w = 0),
    so one sweep can hold diffusion and GAN arms side by side.

    ``guidance_interval`` is kept (as ``[lo, hi]`` floats) only where it changes the samples - a guided
    Gaussian cell; otherwise it is dropped, so a cell without one has exactly the settings, the key and
    the result line it had before the key existed. ``precision`` likewise only when it is not ``fp32``, and
    ``autoguide`` / ``autoguide_step`` only for an autoguided cell of a diffusion arm. A blur
    arm, whose process has no noise levels σ, is refused an interval (give a per-process value such as
    ``{gaussian: [0.28, 5.42], blur: null}``).

    A progressively distilled arm (``distilled``: the record of its newest checkpoint, see
    :mod:`dreamdata.distill.record`) likewise samples every cell with the one sampler it was distilled for -
    DDIM, its steps on its trailing grid, w = 0 (its guidance is baked in) - so its cells collapse into one."""
    from dreamdata.sampling.from_run import is_gan, sampler_and_steps

    resolved = {}
    for key, value in settings.items():
        if key == "checkpoints":
            continue
        if isinstance(value, dict):
            if process_kind not in value:
                raise ConfigError(f"sampling {key!r} = {value!r} has no value for a {process_kind} process")
            value = value[process_kind]
        resolved[key] = value
    interval = resolved.pop("guidance_interval", None)
    autoguide_weight, autoguide_step = resolved.pop("autoguide", 0.0), resolved.pop("autoguide_step", None)
    if resolved.get("precision") == "fp32":  # the default is left out: a cell has the settings and key it had
        resolved.pop("precision")           # before the option existed
    if is_gan(process):
        resolved.update(sampler="gan", steps=1, guidance=0.0)
        return resolved
    if distilled is not None:
        resolved.update(sampler=distilled.sampler, steps=distilled.steps, spacing=distilled.spacing, guidance=0.0,
                        eta=None)
        return resolved
    sampler, steps = sampler_and_steps(process, resolved["sampler"], resolved["steps"] or num_steps,
                                       start_noise=resolved["start_noise"])
    resolved["sampler"], resolved["steps"] = sampler, min(int(steps), num_steps)
    if not conditional:
        resolved["guidance"] = 0.0
    if interval is not None and float(resolved["guidance"]) != 0:
        if getattr(getattr(process, "schedule", None), "alpha_bar", None) is None:
            raise ConfigError(f"sampling 'guidance_interval' = {interval!r} is in Gaussian noise levels sigma, and "
                              f"a {process_kind} process has none (use {{gaussian: {interval!r}, {process_kind}: "
                              "null}})")
        resolved["guidance_interval"] = [float(value) for value in interval]
    if autoguide_weight and autoguide_step is not None:  # kept only where it changes the samples, like the interval
        resolved["autoguide"], resolved["autoguide_step"] = float(autoguide_weight), int(autoguide_step)
    return resolved


def cell_slug(sampling: dict[str, Any]) -> str:
    """A readable, unique folder name for resolved sampling settings: the sampler, steps and guidance (and
    its interval, ``-gi<lo>-<hi>``), then every other setting that is not at its default."""
    slug = f"{sampling['sampler']}-{sampling['steps']}steps-w{float(sampling['guidance']):g}"
    if sampling.get("guidance_interval") is not None:
        slug += "-gi{:g}-{:g}".format(*sampling["guidance_interval"])
    if sampling.get("precision", "fp32") != "fp32":
        slug += f"-{sampling['precision']}"
    if sampling.get("autoguide"):
        slug += f"-ag{float(sampling['autoguide']):g}at{sampling['autoguide_step']}"
    for key in ("spacing", "eta", "x0_clip", "start_noise"):
        if sampling.get(key) != SAMPLING_DEFAULTS[key]:
            slug += f"-{key.replace('_', '')}{sampling[key]}"
    return slug.replace("+", "p").replace("/", "-")


def make_cell(arm: str, checkpoint_step: int, sampling: dict[str, Any]) -> Cell:
    return Cell(arm, int(checkpoint_step), sampling, f"{arm}/step-{int(checkpoint_step)}/{cell_slug(sampling)}")


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Training steps of the run's checkpoints that can be sampled: every weights file.

    The ``.state.pt`` beside one is needed to resume training, not to sample, and the sweep scores an arm only
    once it is trained (or trained elsewhere), so a run that brought back its weights alone (a GPU run's
    ``*.safetensors``) is scored as it is. A weights file is written atomically, so one that is there is whole.
    """
    folder = run_dir / "checkpoints"
    return sorted(int(weights.name.split("-")[1].split(".")[0]) for weights in folder.glob("step-*.safetensors"))


def select_checkpoints(wanted: list[Any], available: list[int], arm: str) -> list[int]:
    """The checkpoint steps a sweep scores for an arm: ``last``, ``all`` or listed steps (which must exist)."""
    if not available:
        raise ConfigError(f"arm {arm!r}: the run has no checkpoint")
    chosen: list[int] = []
    for item in wanted:
        if item == "last":
            chosen.append(available[-1])
        elif item == "all":
            chosen.extend(available)
        elif item in available:
            chosen.append(int(item))
        else:
            raise ConfigError(f"arm {arm!r}: checkpoints lists step {item}, but the run has checkpoints at "
                              f"{', '.join(map(str, available))} (set train.checkpoint_every so that it is one)")
    return sorted(set(chosen))


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
