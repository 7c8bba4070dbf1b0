"""The noise-vs-blur study of the cold-diffusion report: several processes, one network, one budget, one table.

A study file (YAML, e.g. ``benchmarks/cold-study.yaml``) holds

* ``base``: a run config (the sections of a preset) shared by every arm - data, network, optimiser, budget;
* ``arms``: ``name -> partial run config`` merged onto ``base`` (typically only the ``process`` section);
* ``evaluation``: how each trained arm is scored (:class:`EvaluationSettings`).

:func:`run_cold_study` trains each arm into ``OUT/runs/<arm>`` (resuming an unfinished run, skipping a
finished one), then scores it from its run directory alone:

* held-out loss: the last ``val_loss_ema`` in ``metrics.jsonl`` (each arm's *own* objective - ε-MSE for
  noise, x0-L1/L2 for blur - so it shows convergence, not a comparison across arms);
* conditional reconstruction: the first ``test_images`` test images degraded to the last step
  (``q_sample`` at ``T - 1``) and restored by the arm's sampler; RMSE, SSIM, PSNR in ``[0, 1]``;
* unconditional samples: ``samples`` images (``samples.npz``, uint8 NHWC) and a grid; FID when a scorer
  ``fid_of(images_uint8_nchw) -> float`` is passed (the column is left out otherwise).

It writes ``OUT/table.md``, ``OUT/results.json``, per-arm ``samples.png`` and ``reconstructions.png``
(rows: original / degraded / restored), and ``OUT/alpha_bar.png`` for the Gaussian arms' schedules.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import yaml

from dreamdata.atomic import atomic_path, write_text_atomic
from dreamdata.config import RunConfig, build_dataclass, merge_trees, set_dotted, config_from_dict, parse_override
from dreamdata.errors import ConfigError
from dreamdata.process import betas_from_config
from dreamdata.process.schedules import derive_schedule

__all__ = ["EvaluationSettings", "FidScorer", "StudyConfig", "load_study", "run_cold_study"]

FidScorer = Callable[[torch.Tensor], float]
"""``fid_of(images)``: FID of uint8 images ``[N, C, H, W]`` against the scorer's own reference set."""

TRAINED_MARKER = "study-trained.json"


@dataclass
class EvaluationSettings:
    """How every arm is scored, the same way."""

    test_images: int = 500  # first N test images, degraded to t = T and restored (RMSE, SSIM, PSNR)
    samples: int = 1000  # unconditional samples per arm (samples.npz; FID when a scorer is given)
    grid: int = 64  # samples shown in samples.png
    seed: int = 0
    gaussian_sampler: str = "ddim"  # sampler for the noise arms
    gaussian_steps: int = 100
    cold_sampler: str = "cold-improved"  # sampler for the blur arms (Bansal et al. 2022, Algorithm 2)
    cold_steps: Optional[int] = None  # None = every step T
    start_noise: Optional[float] = None  # blur generation noise; None = each arm's process.blur_start_noise
    batch: int = 250
    device: str = "cpu"


@dataclass
class StudyConfig:
    name: str
    arms: dict[str, RunConfig]
    evaluation: EvaluationSettings


def load_study(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    """Read a study file; ``overrides`` ``section.key=value`` go to ``base`` (every arm; a key an arm sets
    itself keeps the arm's value), or to the evaluation settings when they start with ``evaluation.``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"study file {path}: no such file")
    tree = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(tree) - {"name", "base", "arms", "evaluation"})
    if unknown:
        raise ConfigError(f"study file {path}: unknown key {unknown[0]!r} (known: name, base, arms, evaluation)")
    base, evaluation = dict(tree.get("base") or {}), dict(tree.get("evaluation") or {})
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("evaluation."):
            set_dotted(evaluation, key[len("evaluation."):], value)
        else:
            set_dotted(base, key, value)
    arms_tree = tree.get("arms") or {}
    if not isinstance(arms_tree, dict) or not arms_tree:
        raise ConfigError(f"study file {path}: 'arms' must map arm names to (partial) run configs")
    arms = {}
    for name, arm in arms_tree.items():
        try:
            arms[str(name)] = config_from_dict(merge_trees(merge_trees(base, arm or {}), {"name": str(name)}))
        except ConfigError as error:
            raise ConfigError(f"study arm {name!r}: {error}") from None
    settings = build_dataclass(EvaluationSettings, evaluation, "evaluation.")
    return StudyConfig(str(tree.get("name", path.stem)), arms, settings)


# -- one arm ------------------------------------------------------------------------------------------


def train_arm(config: RunConfig, run_dir: Path) -> None:
    """Train the arm into ``run_dir``: resume an interrupted run, skip a finished one."""
    from dreamdata.training import checkpoint as ckpt
    from dreamdata.training.run_dir import discard_unstarted_run
    from dreamdata.training.trainer import train

    if (run_dir / TRAINED_MARKER).is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = run_dir if ckpt.latest_checkpoint(run_dir) is not None else None
    if resume is None:  # a start that died before its first checkpoint: begin again, without its files
        discard_unstarted_run(run_dir)
    result = train(config, resume=resume, run_dir=None if resume else run_dir)
    write_text_atomic(run_dir / TRAINED_MARKER, json.dumps({"step": result.step}) + "\n")


def _held_out_loss(run_dir: Path) -> Optional[float]:
    from dreamdata.training.run_dir import read_metrics

    values = [r["val_loss_ema"] for r in read_metrics(run_dir) if "val_loss_ema" in r]
    return values[-1] if values else None


def evaluate_arm(run_dir: Path, out_dir: Path, settings: EvaluationSettings,
                 fid_of: Optional[FidScorer] = None) -> dict[str, Any]:
    """Score a trained arm (see the module docstring); writes grids and ``samples.npz`` into ``out_dir``."""
    from dreamdata.data import load_dataset
    from dreamdata.process import GaussianBlurDegradation
    from dreamdata.sampling.blur_prior import prior_for_run, start_sampler
    from dreamdata.sampling.generate import generate, to_uint8, uint8_grid, write_png
    from dreamdata.sampling.restore import degrade_and_restore, restoration_scores
    from dreamdata.training.pretrained import load_trained
    from dreamdata.training.run_dir import read_metrics

    model = load_trained(run_dir, device=settings.device)
    config, process, network = model.config, model.process, model.network
    cold = isinstance(process, GaussianBlurDegradation)
    sampler = settings.cold_sampler if cold else settings.gaussian_sampler
    steps = (settings.cold_steps or process.num_steps) if cold else settings.gaussian_steps
    conditional = int(getattr(network, "num_classes", 0)) > 0

    test = load_dataset(config.data, "test")
    count = min(settings.test_images, len(test))
    clean = test.images[:count].float().div(127.5).sub(1.0)
    labels = test.labels[:count] if conditional else None
    clock = time.perf_counter()
    degraded, restored = degrade_and_restore(network, process, clean, labels, sampler, steps, settings.seed,
                                             batch_size=settings.batch, device=settings.device)
    reconstruction_seconds = time.perf_counter() - clock
    scores = restoration_scores(restored, clean)
    shown = min(count, 16)
    write_png(uint8_grid(torch.cat([clean[:shown], degraded[:shown], restored[:shown]]), nrow=shown),
              out_dir / "reconstructions.png")

    start, start_noise = None, None
    if cold:
        prior = prior_for_run(process, config, run_dir)
        start_noise = config.process.blur_start_noise if settings.start_noise is None else settings.start_noise
        start = start_sampler(prior, start_noise)
    clock = time.perf_counter()
    samples = generate(network, process, None, settings.samples, settings.seed, sampler=sampler, steps=steps,
                       batch_size=settings.batch, device=settings.device, progress=False, start=start)
    sampling_seconds = time.perf_counter() - clock
    pixels = to_uint8(samples)
    write_png(uint8_grid(samples[:settings.grid], nrow=max(1, int(settings.grid ** 0.5))), out_dir / "samples.png")
    with atomic_path(out_dir / "samples.npz") as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, images=pixels.permute(0, 2, 3, 1).numpy())

    records = read_metrics(run_dir)
    result = {
        "process": config.process.kind, "num_steps": process.num_steps,
        "schedule": config.process.blur_schedule if cold else config.process.schedule,
        "objective": f"x0-{config.process.blur_loss}" if cold else f"{config.process.prediction}-mse",
        "train_steps": model.step, "train_minutes": round(records[-1]["elapsed_s"] / 60, 2) if records else None,
        "images_seen": model.step * config.train.batch_size, "held_out_loss": _held_out_loss(run_dir),
        "sampler": sampler, "sampling_steps": min(steps, process.num_steps), "start_noise": start_noise,
        "test_images": count, **scores, "samples": settings.samples,
        "reconstruction_seconds": round(reconstruction_seconds, 1), "sampling_seconds": round(sampling_seconds, 1),
    }
    if fid_of is not None:
        result["fid"] = float(fid_of(pixels))
    return result


# -- the study ----------------------------------------------------------------------------------------


def _table(results: dict[str, dict[str, Any]], with_fid: bool) -> str:
    def number(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    header = ["arm", "process", "T", "train steps (images)", "train min", "held-out loss (own objective)",
              "RMSE ↓", "SSIM ↑", "PSNR dB ↑"] + (["FID ↓"] if with_fid else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, r in results.items():
        row = [arm, f"{r['process']} ({r['schedule']})", str(r["num_steps"]),
               f"{r['train_steps']:,} ({r['images_seen']:,})", number(r["train_minutes"], 1),
               f"{number(r['held_out_loss'], 4)} ({r['objective']})", number(r["rmse"], 4), number(r["ssim"], 4),
               number(r["psnr"], 2)] + ([number(r.get("fid"), 1)] if with_fid else [])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def run_cold_study(study: StudyConfig, out_dir: str | Path, fid_of: Optional[FidScorer] = None,
                   only: Optional[list[str]] = None, train_only: bool = False) -> Path:
    """Train and score every arm (or those in ``only``); returns the path of ``table.md``."""
    out_dir = Path(out_dir).expanduser()
    names = list(study.arms) if only is None else only
    missing = [name for name in names if name not in study.arms]
    if missing:
        raise ConfigError(f"unknown study arm {missing[0]!r} (arms: {', '.join(study.arms)})")
    schedules = {name: derive_schedule(betas_from_config(config.process)).alpha_bar
                 for name, config in study.arms.items() if config.process.kind == "gaussian"}
    if schedules:
        from dreamdata.reports.schedules import plot_alpha_bar

        plot_alpha_bar(schedules, out_dir / "alpha_bar.png")
    for name in names:
        print(f"== {name}: training", flush=True)
        train_arm(study.arms[name], out_dir / "runs" / name)
    if train_only:
        return out_dir
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text())["arms"] if results_path.is_file() else {}
    for name in names:
        print(f"== {name}: evaluating", flush=True)
        results[name] = evaluate_arm(out_dir / "runs" / name, out_dir / name, study.evaluation, fid_of)
        record = {"study": study.name, "evaluation": dataclasses.asdict(study.evaluation), "arms": results}
        write_text_atomic(results_path, json.dumps(record, indent=2) + "\n")
    ordered = {name: results[name] for name in study.arms if name in results}
    table = _table(ordered, with_fid=any("fid" in r for r in ordered.values()))
    write_text_atomic(out_dir / "table.md", table)
    return out_dir / "table.md"
