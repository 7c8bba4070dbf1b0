"""The report page of a training run (diffusion or GAN), read only from its run directory.

Sections: overview (data, network and parameter count, budget, time, device, code version), config (what
differs from its preset, and all of it), curves (loss, held-out loss, lr, img/s), metrics over training,
samples (grids upscaled with class names, trajectory strips), checkpoints, and the command that reproduces
it. A piece the directory lacks - no metrics yet, no checkpoint, a budget not spent - is said, not fatal.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Optional

import yaml

from dreamdata.reports.html.figures import metric_curves, training_curves
from dreamdata.reports.html.page import Page
from dreamdata.reports.html.views import labelled_view
from dreamdata.training.run_dir import CONFIG_FILE, DATA_FILE, VERSION_FILE, read_metrics

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _config_tree(run_dir: Path) -> dict:
    try:
        return yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, weights file)`` of every checkpoint in the run, by step."""
    found = []
    for path in sorted((run_dir / "checkpoints").glob("step-*.safetensors")):
        try:
            found.append((int(path.name[5:].split(".")[0]), path))
        except ValueError:
            continue
    return found


def parameter_counts(weights: Path) -> dict[str, int]:
    """Parameters per top-level module of the trained network (``model.*`` tensors of a checkpoint, buffers
    such as batch-norm statistics left out), read from the safetensors header without loading tensors."""
    with open(weights, "rb") as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(length))
    counts: dict[str, int] = {}
    for name, entry in header.items():
        if not name.startswith("model.") or name.endswith(BUFFER_SUFFIXES):
            continue
        numel = 1
        for size in entry["shape"]:
            numel *= size
        part = name.split(".")[1]
        counts[part] = counts.get(part, 0) + numel
    return counts


def preset_of(version: Optional[dict]) -> Optional[str]:
    """The config file or preset a run was started from, read off its recorded command line."""
    command = [str(a) for a in (version or {}).get("command") or []]
    for verb in ("train", "demo"):
        if verb in command[:3]:
            rest = command[command.index(verb) + 1:]
            if verb == "demo":
                return "demo"
            for arg in rest:
                if not arg.startswith("-") and "=" not in arg:
                    return arg
    return None


def config_differences(tree: dict, preset: Optional[str]) -> tuple[str, list[tuple[str, Any, Any]]]:
    """``(what was compared with, [(key, that value, this run's value)])``."""
    from dreamdata.config import RunConfig, load_config

    base, label = None, "the dataclass defaults"
    if preset:
        try:
            base, label = load_config(preset).to_dict(), f"preset/config {preset!r}"
        except Exception:  # noqa: BLE001 - a preset renamed since, a file gone: compare with the defaults
            base = None
    if base is None:
        base, label = RunConfig().to_dict(), "the dataclass defaults"
    ours, theirs = _flatten(tree), _flatten(base)
    rows = [(key, theirs.get(key, "(absent)"), ours.get(key, "(absent)")) for key in sorted(set(ours) | set(theirs))
            if ours.get(key) != theirs.get(key)]
    return label, rows


def _budget(train: dict, data: Optional[dict]) -> tuple[str, Optional[int]]:
    """The budget as text and, for a step or epoch budget, the steps it means."""
    batch = train.get("batch_size") or 1
    if train.get("steps") is not None:
        return f"{train['steps']:,} steps of batch {batch}", int(train["steps"])
    if train.get("epochs") is not None:
        per_epoch = (data or {}).get("num_train", 0) // batch
        steps = max(1, -(-int(train["epochs"] * per_epoch * 1000) // 1000)) if per_epoch else None
        return f"{train['epochs']:g} epochs of batch {batch}" + (f" ({steps:,} steps)" if steps else ""), steps
    if train.get("minutes") is not None:
        return f"{train['minutes']:g} minutes of batch {batch}", None
    return "(no budget recorded)", None


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "(not logged)"
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)" if seconds >= 60 else f"{seconds:.1f} s"


def kind_of(tree: dict) -> str:
    process = tree.get("process", {}) or {}
    kind = process.get("kind", "gaussian")
    if kind == "gan":
        return "GAN (DCGAN, generator and discriminator)"
    if kind == "blur":
        return "cold diffusion (Gaussian blur)"
    return (f"diffusion (Gaussian, {process.get('schedule', '?')} schedule, T = {process.get('num_steps', '?')}, "
            f"{process.get('prediction', '?')}-prediction)")


def run_status(run_dir: Path, tree: dict, records: list[dict]) -> tuple[bool, str]:
    """``(finished, description)``: whether the budget was spent and the last checkpoint written."""
    data = _json(run_dir / DATA_FILE)
    train = tree.get("train", {}) or {}
    _, total = _budget(train, data)
    saved = checkpoints(run_dir)
    last_step = saved[-1][0] if saved else None
    logged_step = max((r.get("step", 0) for r in records), default=0)
    if last_step is None:
        return False, (f"no checkpoint yet (last logged step {logged_step}): the run is still starting, or "
                       "stopped before its first checkpoint")
    if total is not None and last_step < total:
        return False, (f"unfinished: the newest checkpoint is step {last_step:,} of a {total:,}-step budget; "
                       f"`dreamdata train --resume {run_dir}` continues it")
    if total is None and train.get("minutes") is not None:
        elapsed = max((r.get("elapsed_s", 0) for r in records), default=0)
        if elapsed < 60 * train["minutes"] * 0.98:
            return False, (f"unfinished: {elapsed / 60:.1f} of {train['minutes']:g} minutes trained; "
                           f"`dreamdata train --resume {run_dir}` continues it")
    return True, f"finished: {last_step:,} steps, newest checkpoint step {last_step:,}"


def overview_rows(run_dir: Path, tree: dict, records: list[dict]) -> list[tuple[str, str]]:
    data = _json(run_dir / DATA_FILE) or {}
    version = _json(run_dir / VERSION_FILE) or {}
    train, model = tree.get("train", {}) or {}, tree.get("model", {}) or {}
    saved = checkpoints(run_dir)
    if saved:
        counts = parameter_counts(saved[-1][1])
        parts = ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items())) if len(counts) > 1 else ""
        parameters = f"{sum(counts.values()):,} parameters" + (f" ({parts})" if parts else "")
    else:
        parameters = "(no checkpoint yet to count parameters from)"
    shape = f"{data.get('channels', '?')} x {data.get('image_size', '?')} x {data.get('image_size', '?')}"
    throughput = sorted(r["img_per_s"] for r in records if r.get("img_per_s"))
    commit = version.get("git_commit")
    code = (f"dreamdata {version.get('dreamdata', '?')}, git {commit[:12] if commit else '(not a git checkout)'}"
            f"{' (uncommitted changes)' if version.get('git_dirty') else ''}; torch {version.get('torch', '?')}, "
            f"python {version.get('python', '?')}")
    return [
        ("model", kind_of(tree)),
        ("data", f"{data.get('source', '(no data.json)')}: {len(data.get('class_names', []))} classes "
                 f"({', '.join(data.get('class_names', []))}), images {shape}; "
                 f"{data.get('num_train', '?'):,} training, {data.get('num_val', '?'):,} held out"
         if data else "(no data.json)"),
        ("network", f"{model.get('network', '?')}, base channels {model.get('base_channels', '?')}, "
                    f"class-conditional {model.get('class_conditional', '?')}; {parameters}"),
        ("budget", _budget(train, data)[0] + f"; lr {train.get('lr', '?')}, {train.get('optimizer', '?')}"),
        ("time trained", _duration(max((r.get("elapsed_s", 0) for r in records), default=None) if records else None)),
        ("throughput", f"median {throughput[len(throughput) // 2]:,.1f} images/s" if throughput else "(not logged)"),
        ("device", f"train.device = {train.get('device', '?')}, precision {train.get('precision', '?')}"),
        ("code version", code),
    ]


def _held_out_n(tree: dict, data: Optional[dict]) -> Optional[int]:
    train = tree.get("train", {}) or {}
    if not data or not data.get("num_val"):
        return None
    return min(int(data["num_val"]), int(train.get("batch_size", 0)) * int(train.get("val_batches", 0)))


def add_curves(page: Page, run_dir: Path, tree: dict, records: list[dict], name: str) -> None:
    data = _json(run_dir / DATA_FILE)
    gan = (tree.get("process", {}) or {}).get("kind") == "gan"
    curve = training_curves(records, page.drawn(f"{name}-curves.png"), gan,
                            int((tree.get("train", {}) or {}).get("batch_size", 0)), _held_out_n(tree, data))
    if curve is None:
        page.missing(f"{run_dir / 'metrics.jsonl'} has no loss records yet (the run has not logged a step)")
    else:
        page.image(curve, "loss, learning rate and images/s against the training step")


def add_samples(page: Page, run_dir: Path, name: str) -> None:
    """Every PNG under ``samples/``: grids as upscaled labelled views (raw files untouched), strips as drawn."""
    data = _json(run_dir / DATA_FILE) or {}
    found = sorted((run_dir / "samples").glob("*.png"))
    if not found:
        page.missing("no sample grid in samples/ (train.sample_grid=false, or the run has not finished)")
    for path in found:
        if "trajectory" in path.name or "forward" in path.name:
            page.image(path, f"{path.name}: the reverse process per class (x_t and the predicted x_0)")
            continue
        cell = int(data.get("image_size") or 0)
        if not cell:
            page.image(path, path.name)
            continue
        view = labelled_view(path, page.drawn(f"{name}-{path.stem}@view.png"), cell, data.get("class_names", []))
        page.image(view, pixels=True, caption=f"{path.name}: one row per class, upscaled (nearest neighbour) from "
                                              f"{cell}-pixel images; raw file {path.relative_to(run_dir)}")


def add_digest(page: Page, run_dir: Path, name: str) -> None:
    """A run in brief (a study's generator): overview, status, curves, samples."""
    tree, records = _config_tree(run_dir), read_metrics(run_dir)
    finished, status = run_status(run_dir, tree, records)
    if not finished:
        page.missing(status)
    page.pairs([("run directory", str(run_dir)), ("status", status), *overview_rows(run_dir, tree, records)])
    add_curves(page, run_dir, tree, records, name)
    add_samples(page, run_dir, name)


def build_run_page(run_dir: Path, page: Page) -> None:
    tree, records = _config_tree(run_dir), read_metrics(run_dir)
    version = _json(run_dir / VERSION_FILE)
    finished, status = run_status(run_dir, tree, records)
    page.subtitle = f"training run · {kind_of(tree)} · {status}"

    page.section("overview", "Overview")
    if not finished:
        page.missing(status)
    page.pairs([("run directory", run_dir.name), ("status", status), *overview_rows(run_dir, tree, records)])

    page.section("config", "Config")
    label, differences = config_differences(tree, preset_of(version))
    page.text(f"What differs from {label} ({len(differences)} keys):")
    page.table(["key", label, "this run"], differences)
    text = (run_dir / CONFIG_FILE).read_text() if (run_dir / CONFIG_FILE).is_file() else "(no config.yaml)"
    page.code(text, "the resolved config (config.yaml)")

    page.section("curves", "Loss and held-out curves")
    add_curves(page, run_dir, tree, records, "run")

    page.section("metrics", "Metrics over training")
    evaluations = [r for r in records if any(key.startswith("eval_") for key in r)]
    if not evaluations:
        page.text("No sample-quality metrics were logged during training (evaluation.every = 0).")
    else:
        figure = metric_curves(records, page.drawn("run-metrics.png"))
        if figure is not None:
            page.image(figure, "sample-quality metrics of the EMA weights against the training step")
        keys = sorted({key for r in evaluations for key in r if key.startswith("eval_")})
        page.table(["step", *keys], [[r["step"], *(_number(r.get(key)) for key in keys)] for r in evaluations],
                   numeric=range(len(keys) + 1))

    page.section("samples", "Samples and trajectories")
    add_samples(page, run_dir, "run")
    for path in sorted(run_dir.glob("*.png")):
        page.image(path, f"{path.name} (written by the run)")

    page.section("checkpoints", "Checkpoints")
    saved = checkpoints(run_dir)
    latest = _json(run_dir / "checkpoints" / "latest.json") or {}
    if not saved:
        page.missing("no checkpoint yet")
    page.table(["step", "file", "size MB", "latest"],
               [[step, path.name, f"{path.stat().st_size / 1e6:.2f}", "yes" if latest.get("step") == step else ""]
                for step, path in saved], numeric=(0, 2))

    page.section("reproduce", "Reproduce")
    page.text("config.yaml is the resolved config, so training from it again reproduces the run "
              "(bit-exact on the CPU; same code version):")
    page.code(f"dreamdata train {run_dir / CONFIG_FILE} --run-dir NEW_DIRECTORY")
    if version and version.get("command"):
        page.text("The command line that started it:")
        page.code(" ".join(str(a) for a in version["command"]))
    if not finished:
        page.code(f"dreamdata train --resume {run_dir}")


def _number(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
