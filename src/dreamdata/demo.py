"""``dreamdata demo``: the first thing a newcomer runs.

Trains the ``demo`` preset (a small class-conditional UNet on Fashion-MNIST, a few CPU minutes), then
writes a class grid sampled with classifier-free guidance and the loss curve into the run directory and
prints where they are.
"""

from __future__ import annotations

from pathlib import Path

from dreamdata.config import load_config
from dreamdata.reports.curves import plot_loss_curve
from dreamdata.sampling.preview import write_class_grid
from dreamdata.training.trainer import Trainer

DEMO_GUIDANCE = 1.5


def run_demo(overrides: list[str], runs_dir: str = "runs") -> Path:
    config = load_config("demo", [f"runs_dir={runs_dir}", *overrides])
    trainer = Trainer(config)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    run_dir = result.run_dir
    grid = write_class_grid(trainer.ema.module, trainer.process, run_dir / "samples" / "demo-grid-guided.png",
                            per_class=config.train.sample_per_class, steps=config.train.sample_steps,
                            seed=config.train.seed, device=trainer.device, guidance_scale=DEMO_GUIDANCE,
                            progress=config.train.progress)
    curve = plot_loss_curve(run_dir, run_dir / "loss.png")
    print("\nDemo finished. Look at:")
    print(f"  samples, one row per class ({', '.join(trainer.train_data.class_names)}), guidance w={DEMO_GUIDANCE}:")
    print(f"    {grid}")
    print(f"  loss curve:      {curve}")
    print(f"  metrics:         {run_dir / 'metrics.jsonl'}")
    print(f"  resolved config: {run_dir / 'config.yaml'}")
    return run_dir
