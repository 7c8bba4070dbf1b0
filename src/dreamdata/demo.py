"""``dreamdata demo``: the first thing a newcomer runs.

Trains the ``demo`` preset (a small class-conditional UNet on Fashion-MNIST, a few CPU minutes), samples
every class with classifier-free guidance, and writes into the run directory:

* ``samples/demo-grid.png`` - one row per class;
* ``samples/demo-trajectory.png`` - the reverse process of the first sample of each class (x_t and the
  predicted x_0 every few steps), the reports' reverse-process figure;
* ``loss.png`` - training and held-out loss against step;
* ``summary.md`` - what was trained, for how long, how well, and where everything is;
* ``report.html`` - all of it on one page (``dreamdata report``), the first thing to open.
"""

from __future__ import annotations

import json
from pathlib import Path

from dreamdata.atomic import write_text_atomic
from dreamdata.config import load_config
from dreamdata.errors import ConfigError
from dreamdata.reports.curves import plot_loss_curve
from dreamdata.reports.html import write_report_or_warn
from dreamdata.reports.strips import write_trajectory_strip
from dreamdata.sampling.generate import TrajectoryRecorder, generate, sampling_timesteps
from dreamdata.sampling.grid import save_grid
from dreamdata.sampling.preview import class_major_indices
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.trainer import Trainer

DEMO_GUIDANCE = 1.5
DEMO_SAMPLER = "ddpm"
TRAJECTORY_COLUMNS = 10


def run_demo(overrides: list[str], runs_dir: str = "runs") -> Path:
    """Train the demo preset (with ``overrides``), sample it, write the figures; return the run directory."""
    config = load_config("demo", [f"runs_dir={runs_dir}", "train.sample_grid=false", *overrides])
    if config.process.kind != "gaussian":  # checked before training, not after minutes of it
        raise ConfigError(f"config key process.kind: the demo samples with guided DDPM, which needs "
                          f"process.kind=gaussian, got {config.process.kind!r}; for cold diffusion use "
                          f"`dreamdata train demo process.kind={config.process.kind} ...` and `dreamdata sample RUN`")
    trainer = Trainer(config)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    run_dir, tc = result.run_dir, config.train
    network, process = trainer.ema.module, trainer.process
    class_names = trainer.train_data.class_names

    labels, indices = class_major_indices(network.num_classes, tc.sample_per_class)
    timesteps = sampling_timesteps(process, tc.sample_steps)
    recorder = TrajectoryRecorder(indices[::tc.sample_per_class].tolist(),
                                  max(1, timesteps.numel() // TRAJECTORY_COLUMNS), timesteps.numel())
    images = generate(network, process, labels, indices.numel(), tc.seed, sampler=DEMO_SAMPLER,
                      steps=tc.sample_steps, guidance_scale=DEMO_GUIDANCE, batch_size=256, device=trainer.device,
                      progress=tc.progress, indices=indices, on_step=recorder)
    grid = save_grid(images, run_dir / "samples" / "demo-grid.png", nrow=tc.sample_per_class)
    shown, x_t, x0_hat = recorder.stacked()
    trajectory = write_trajectory_strip(run_dir / "samples" / "demo-trajectory.png", class_names, shown, x_t, x0_hat,
                                        title=f"{DEMO_SAMPLER}, {timesteps.numel()} steps, w={DEMO_GUIDANCE:g}")
    curve = plot_loss_curve(run_dir, run_dir / "loss.png")
    summary = write_summary(run_dir, trainer, result.step, grid, trajectory, curve)
    report = write_report_or_warn(run_dir, quiet=True)

    print("\nDemo finished. Look at:")
    if report is not None:
        print(f"  open {report}")
    else:
        print(f"  (no report.html: `dreamdata report {run_dir}` says why)")
    print(f"  samples, one row per class ({', '.join(class_names)}), guidance w={DEMO_GUIDANCE:g}:")
    print(f"    {grid}")
    print(f"  reverse process:  {trajectory}")
    print(f"  loss curve:       {curve}")
    print(f"  summary:          {summary}")
    print(f"  sample more:      dreamdata sample {run_dir} --guidance 1.8 --sampler dpm++2m --steps 20")
    return run_dir


def write_summary(run_dir: Path, trainer: Trainer, steps: int, grid: Path, trajectory: Path, curve: Path) -> Path:
    """A short Markdown page: the run's numbers and links to its figures."""
    records = read_metrics(run_dir)
    last = next((r for r in reversed(records) if "loss" in r), {})
    held_out = next((r for r in reversed(records) if "val_loss_ema" in r), {})
    config = trainer.config
    lines = [
        f"# dreamdata demo - {run_dir.name}",
        "",
        f"A class-conditional DDPM ({config.process.schedule} schedule, T = {config.process.num_steps}, "
        f"{config.process.prediction}-prediction) trained on {trainer.train_data.source}.",
        "",
        "| | |",
        "| --- | --- |",
        f"| network | {trainer.network.__class__.__name__}, "
        f"{sum(p.numel() for p in trainer.network.parameters()):,} parameters |",
        f"| training | {steps:,} steps of batch {config.train.batch_size} "
        f"({steps * config.train.batch_size:,} images, {last.get('epoch', 0):.2f} epochs) "
        f"in {trainer.elapsed / 60:.1f} min on {trainer.device} |",
        f"| last training loss | {last.get('loss', float('nan')):.4f} |",
        f"| held-out loss (EMA weights) | {held_out.get('val_loss_ema', float('nan')):.4f} |",
        f"| sampling | {DEMO_SAMPLER}, {config.train.sample_steps} steps, classifier-free guidance "
        f"w = {DEMO_GUIDANCE:g}, EMA weights |",
        "",
        f"![samples, one row per class]({grid.relative_to(run_dir)})",
        "",
        f"Rows: {', '.join(trainer.train_data.class_names)}.",
        "",
        f"![reverse process]({trajectory.relative_to(run_dir)})",
        "",
        f"![loss curve]({curve.relative_to(run_dir)})",
        "",
        "Reproduce: `dreamdata train demo` with the overrides in `config.yaml`; code version in "
        "`version.json`:",
        "",
        "```json",
        json.dumps(json.loads((run_dir / "version.json").read_text()), indent=2),
        "```",
        "",
    ]
    path = run_dir / "summary.md"
    write_text_atomic(path, "\n".join(lines))
    return path
