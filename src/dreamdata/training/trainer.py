"""The training loop: data -> process loss -> optimizer, resumable and identical under resume.

Design choices that make a resumed run continue *exactly* (its loss trace equals an uninterrupted run's
on the CPU):

* batches are addressed by the global step (:class:`dreamdata.data.BatchStream`), so no data-loader
  state needs saving;
* the global torch RNG (noise, timesteps, label dropout, dropout) is saved and restored with each
  checkpoint, and nothing besides the training step draws from it - validation
  (:mod:`dreamdata.training.monitoring`) and preview sampling use their own seeded generators;
* the running loss window, the EMA and the optimizer/LR-scheduler state are checkpointed too (what a
  checkpoint's state holds, and how a resume restores it: :mod:`dreamdata.training.trainer_state`);
* Ctrl-C (SIGINT) only sets a flag; the loop stops at the next step boundary and checkpoints there, so
  an interrupted run resumes as exactly as one killed after a periodic checkpoint.

A step whose loss or gradient is not finite is skipped with a warning (the weights, optimizer and EMA
are left as they were); after ``train.max_bad_steps`` such steps in a row, or as soon as the weights
themselves are non-finite, training stops with a :class:`~dreamdata.errors.TrainingDivergedError`.
Non-finite weights are never written as a checkpoint, so the last good one stays the newest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from dreamdata.atomic import remove_stale_temporaries
from dreamdata.config import RunConfig
from dreamdata.data import BatchStream, describe_hflip, load_dataset, resolve_hflip, split_validation
from dreamdata.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from dreamdata.networks import describe_network
from dreamdata.process import build_process
from dreamdata.sampling.blur_prior import prior_for_run, start_sampler
from dreamdata.sampling.preview import write_class_grid
from dreamdata.training import run_dir as rd
from dreamdata.training.distributed import (DistributedContext, all_reduce_sum, broadcast_flag,
                                            check_replicas_identical, init_distributed, shutdown_distributed)
from dreamdata.training.interrupt import interrupt_at_step_boundary
from dreamdata.training.monitoring import evaluation_summary, record_metrics, validation_loss, validation_losses
from dreamdata.training.objectives import build_networks, build_objective
from dreamdata.training.run_dir import data_description
from dreamdata.training.setup import resolve_device, total_steps_for_budget
from dreamdata.training.tensorboard import open_logger, require_tensorboard
from dreamdata.training.trainer_state import restore_trainer_state, save_trainer_state

# data_description (from run_dir) and validation_loss (from monitoring) are re-exported for existing callers
__all__ = ["TrainResult", "Trainer", "data_description", "train", "validation_loss"]


@dataclass
class TrainResult:
    run_dir: Optional[Path]
    step: int
    losses: list[float] = field(default_factory=list)


class Trainer:
    """Builds everything from a RunConfig and runs (or resumes) the training loop."""

    def __init__(self, config: RunConfig, resume: Optional[str | Path] = None, run_dir: Optional[Path] = None):
        self.config = config
        tc = config.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        if tc.tensorboard:
            require_tensorboard()  # a missing optional package is a config error now, not after the first step
        self.context: DistributedContext = init_distributed(
            "cuda" if tc.device.startswith("cuda") or (tc.device == "auto" and torch.cuda.is_available()) else "cpu")
        self.device = resolve_device(tc.device, self.context.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.run_dir: Optional[Path] = None
        if resume is None and run_dir is not None:
            self._claim(Path(run_dir))

        data = load_dataset(config.data, "train")
        self.train_data, self.val_data = split_validation(data, config.data.val_fraction, config.data.split_seed)
        if tc.batch_size % self.context.world_size:
            raise DataError(f"train.batch_size={tc.batch_size} is the global batch; it must divide evenly "
                            f"over {self.context.world_size} processes")
        self.hflip = resolve_hflip(config.data.hflip, config.data.dataset)  # null: the dataset's default
        self.stream = BatchStream(self.train_data, tc.batch_size // self.context.world_size, seed=tc.seed,
                                  hflip=self.hflip, device=self.device, rank=self.context.rank,
                                  world_size=self.context.world_size)
        self.total_steps = total_steps_for_budget(tc, self.stream.steps_per_epoch)

        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        num_classes = self.train_data.num_classes if config.model.class_conditional else 0
        self.network = build_networks(config, self.train_data.channels, self.train_data.image_size,
                                      num_classes).to(self.device)
        if tc.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.process = build_process(config.process)
        # the step itself: the process's loss of one denoiser, or a GAN's D and G phases
        self.objective = build_objective(config, self.network, self.process, self.device, self.context.enabled,
                                         self.total_steps)
        self.ema = self.objective.ema
        # per-rank stream for noise, timesteps and label dropout
        torch.manual_seed(tc.seed + 1 + self.context.rank)

        self.step = 0
        self.elapsed = 0.0  # training seconds, accumulated across resumes
        self.window_loss = torch.zeros(len(self.objective.loss_names), device=self.device)
        self.window_steps = 0
        self.window_skipped = 0  # steps of the current metrics window skipped for a non-finite loss/gradient
        self.bad_in_a_row = 0
        self.saved_step: Optional[int] = None
        self.last_checkpoint: Optional[Path] = None
        self.interrupt_requested = False  # set by SIGINT; acted on at the next step boundary
        self.stop_after_step = False  # all ranks agree to stop (an interrupt) after the current step
        self.config_recorded = resume is None
        if resume is not None:
            self.run_dir = rd.resolve_run_dir(resume)
            if self.context.is_main:
                self._remove_stale_temporaries()
            self._restore()
            self._check_budget_covers_progress()
            # config.yaml is rewritten with the overrides given with --resume only once they have made
            # progress (the first checkpoint, or the end); a resume that fails before leaves it as it was
        elif self.context.is_main:
            self.run_dir = self.run_dir or rd.new_run_dir(config.runs_dir, config.name)
            rd.write_run_files(self.run_dir, config, data_description(self.train_data, self.val_data))
        self.tensorboard = open_logger(tc.tensorboard, self.run_dir if self.context.is_main else None)
        self.evaluator = None
        if config.evaluation.every and self.context.is_main:
            from dreamdata.evaluation.during_training import TrainingEvaluator

            self.evaluator = TrainingEvaluator(config, self.train_data.class_names, self.device, tc.progress)

    def _claim(self, run_dir: Path) -> None:
        """A new run's ``--run-dir`` must be new or empty (all ranks fail alike if it is not)."""
        problem = None
        if self.context.is_main:
            try:
                self.run_dir = rd.claim_run_dir(run_dir)
            except CheckpointError as error:
                problem = error
        if broadcast_flag(problem is not None, self.context, self.device):
            raise problem or CheckpointError(f"--run-dir {run_dir}: refused by rank 0")

    def _remove_stale_temporaries(self) -> None:
        removed = remove_stale_temporaries(self.run_dir, recursive=True)
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by an interrupted write in {self.run_dir}",
                  flush=True)

    def _check_budget_covers_progress(self) -> None:
        """A resumed step/epoch budget below the steps already trained is refused (it cannot be undone)."""
        tc = self.config.train
        if self.total_steps is None or self.total_steps >= self.step:
            return
        key, value = ("train.steps", tc.steps) if tc.steps is not None else ("train.epochs", tc.epochs)
        budget = "" if key == "train.steps" else f" ({self.total_steps} steps)"
        raise ConfigError(f"config key {key}: {value}{budget} is less than the {self.step} steps the run "
                          f"{self.run_dir} has already trained; give at least {self.step}, or resume without it")

    def _record_config(self) -> None:
        """Write the resumed run's config (with its overrides) once they have made progress."""
        if not self.config_recorded and self.context.is_main and self.run_dir is not None:
            rd.write_run_files(self.run_dir, self.config, data_description(self.train_data, self.val_data))
        self.config_recorded = True

    def _weights_finite(self) -> bool:
        """Whether every weight and buffer of the network and its EMA is finite (identical on every rank)."""
        with torch.no_grad():
            return all(bool(torch.isfinite(tensor).all())
                       for module in (self.network, self.ema.module)
                       for tensor in module.state_dict().values() if tensor.is_floating_point())

    def _diverged(self, reason: str) -> TrainingDivergedError:
        last = (f"the last good checkpoint, {self.last_checkpoint.name}, is intact" if self.last_checkpoint
                else "the run has no checkpoint")
        return TrainingDivergedError(
            f"{self.run_dir}: training stopped at step {self.step}: {reason}; nothing non-finite was saved and "
            f"{last} (train.lr={self.config.train.lr:g}: try a lower one, or check the data)")

    # -- checkpoints (their state: dreamdata.training.trainer_state) -------------------------------
    def save(self) -> None:
        """Checkpoint the run. Collective under DDP: every rank calls it at the same steps.

        Never saves non-finite weights (that stops the run), nor the model while its latest steps were
        skipped as non-finite (that checkpoint is left out, the previous one stays the newest)."""
        if self.saved_step == self.step:
            return
        if not self._weights_finite():
            raise self._diverged("the weights are non-finite (a step's update overflowed)")
        if self.bad_in_a_row:  # the model's loss is non-finite now: keep the last good checkpoint the newest
            if self.context.is_main:
                tqdm.write(f"warning: step {self.step}: no checkpoint, the last {self.bad_in_a_row} step(s) had a "
                           f"non-finite loss or gradient; the newest checkpoint stays "
                           f"{self.last_checkpoint.name if self.last_checkpoint else '(none yet)'}")
            return
        self.saved_step = self.step
        written = save_trainer_state(self)
        if written is None:  # not rank 0, or no run directory
            return
        self.last_checkpoint = written
        self._record_config()

    def _restore(self) -> None:
        restore_trainer_state(self)

    # -- the loop ----------------------------------------------------------------------------------
    def _budget_spent(self) -> bool:
        tc = self.config.train
        if self.total_steps is not None:
            return self.step >= self.total_steps
        return broadcast_flag(self.elapsed >= tc.minutes * 60.0, self.context, self.device)

    def _agree(self, *values: torch.Tensor) -> bool:
        """True when every value is finite on every rank. One host sync and one collective (as GradScaler's
        skip check), which also shares a pending Ctrl-C, so all ranks stop after the same step."""
        finite = torch.stack([torch.isfinite(value.detach().float()).all() for value in values]).all()
        flags = torch.stack([~finite, torch.tensor(self.interrupt_requested, device=finite.device)]).int()
        bad, interrupt = (bool(flag) for flag in all_reduce_sum(flags, self.context).tolist())
        self.stop_after_step = self.stop_after_step or interrupt
        return not bad

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """One optimisation step of the objective: ``(losses, applied)``. A step whose loss or gradient norm
        is not finite is not applied (no optimizer or EMA update); all ranks agree on it."""
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.objective.step(images, labels, self._agree)

    def _log(self, window_seconds: float, extra: dict) -> dict:
        loss_sum = all_reduce_sum(self.window_loss, self.context)
        losses = {name: (float(total) / (self.window_steps * self.context.world_size) if self.window_steps
                         else None) for name, total in zip(self.objective.loss_names, loss_sum.tolist())}
        record = {"step": self.step, "epoch": round(self.step / self.stream.steps_per_epoch, 4), **losses,
                  "lr": self.objective.last_lr(),
                  "img_per_s": round(self.window_steps * self.config.train.batch_size / max(window_seconds, 1e-9), 2),
                  "elapsed_s": round(self.elapsed, 2), **extra}
        if self.window_skipped:
            record["skipped_steps"] = self.window_skipped  # non-finite loss/gradient; not in "loss"
        self.window_loss.zero_()
        self.window_steps = 0
        self.window_skipped = 0
        record_metrics(record, self.run_dir if self.context.is_main else None, self.tensorboard)
        return record

    def _validate(self) -> dict:
        return validation_losses(self.objective, self.val_data, self.config.train, self.device)

    def _evaluate(self) -> None:
        """Sample-quality metrics of the EMA weights, logged as their own metrics.jsonl line (rank 0 works,
        the other ranks wait)."""
        if self.evaluator is not None:
            record = {"step": self.step, **self.evaluator(self.objective.sampling_network(), self.process)}
            record_metrics(record, self.run_dir, self.tensorboard)
            tqdm.write(f"step {self.step}: {evaluation_summary(record)}")
        if self.context.enabled:
            torch.distributed.barrier()

    def _skip(self, loss: torch.Tensor) -> None:
        """Account for a step not applied because its loss or gradient was not finite; stop if hopeless."""
        tc = self.config.train
        self.window_skipped += 1
        self.bad_in_a_row += 1
        if not self._weights_finite():  # skipping cannot help: every later step would be non-finite too
            raise self._diverged("the weights are non-finite (a step's update overflowed)")
        if self.bad_in_a_row > tc.max_bad_steps:
            raise self._diverged(f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradient "
                                 f"(train.max_bad_steps={tc.max_bad_steps})")
        if self.context.is_main:
            shown = ", ".join(f"{value:g}" for value in loss.tolist())
            tqdm.write(f"warning: step {self.step}: non-finite loss ({shown}) or gradient; step skipped "
                       f"({self.bad_in_a_row} in a row, training stops after train.max_bad_steps="
                       f"{tc.max_bad_steps})")

    def _request_stop(self) -> None:
        """The first Ctrl-C: finish this step, then checkpoint and stop."""
        self.interrupt_requested = True
        if self.context.is_main:
            print("\nCtrl-C: stopping after this step to save a checkpoint (press it again to stop at once, "
                  "without one)", flush=True)

    def run(self, stop_at_step: Optional[int] = None) -> TrainResult:
        """Train until the budget is spent (or ``stop_at_step``, used to simulate an interruption)."""
        tc = self.config.train
        if self.context.is_main:
            print(f"{describe_network(self.network)}; {len(self.train_data):,} training images "
                  f"({self.train_data.source}), {len(self.val_data):,} held out; horizontal flips "
                  f"{describe_hflip(self.config.data.hflip, self.config.data.dataset)}; device {self.device}; "
                  f"run directory {self.run_dir}", flush=True)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (tc.progress and self.context.is_main),
                   unit="step", dynamic_ncols=True, desc="train")
        logged: list[float] = []
        self.network.train()
        window_elapsed_start = self.elapsed
        self.stop_after_step = False
        clock = time.perf_counter()
        with interrupt_at_step_boundary(self._request_stop):
            try:
                while (not self._budget_spent() and not self.stop_after_step
                       and (stop_at_step is None or self.step < stop_at_step)):
                    images, labels = self.stream.batch(self.step)
                    loss, applied = self.train_step(images, labels)
                    self.step += 1
                    if applied:
                        self.window_loss += loss
                        self.window_steps += 1
                        self.bad_in_a_row = 0
                    else:
                        self._skip(loss)
                    now = time.perf_counter()
                    self.elapsed += now - clock  # wall clock, including logging and checkpoints
                    clock = now
                    bar.update(1)
                    if self.step % tc.log_every == 0:
                        extra = self._validate() if tc.val_every and self.step % tc.val_every == 0 else {}
                        record = self._log(self.elapsed - window_elapsed_start, extra)
                        window_elapsed_start = self.elapsed
                        if record["loss"] is not None:
                            logged.append(record["loss"])
                            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=record["img_per_s"])
                        if tc.minutes is not None:
                            bar.set_description(f"train ({max(0.0, tc.minutes - self.elapsed / 60):.1f} min left)")
                    if (tc.checkpoint_every and self.step % tc.checkpoint_every == 0) or self.step in tc.keep_steps:
                        self.save()
                    every = self.config.evaluation.every
                    if every and self.step % every == 0:
                        self._evaluate()
                        clock = time.perf_counter()  # evaluation time is not training time (budgets stay fair)
            except KeyboardInterrupt:  # a second Ctrl-C: the state may be mid-step, so it is not saved
                print(f"\ninterrupted again: stopping without a checkpoint; `dreamdata train --resume "
                      f"{self.run_dir}` continues from the last one "
                      f"({self.last_checkpoint.name if self.last_checkpoint else 'none yet'})", flush=True)
                raise
            finally:
                bar.close()
            interrupted = self.stop_after_step
            if interrupted and self.context.is_main:
                print(f"\ninterrupted: stopped after step {self.step}, saving a checkpoint; continue with "
                      f"`dreamdata train --resume {self.run_dir}`", flush=True)
            finished = not interrupted and self._budget_spent()
            if finished and (self.window_steps or self.window_skipped):
                record = self._log(self.elapsed - window_elapsed_start, self._validate())
                if record["loss"] is not None:
                    logged.append(record["loss"])
            every = self.config.evaluation.every
            if finished and every and self.step % every:
                self._evaluate()
            if finished and self.evaluator is not None and self.run_dir is not None:
                from dreamdata.reports.curves import plot_metric_curves

                print(f"metrics over training: {plot_metric_curves(self.run_dir, self.run_dir / 'metrics.png')}")
            self.save()
        if finished and self.bad_in_a_row:
            raise self._diverged(f"its last {self.bad_in_a_row} step(s) had a non-finite loss or gradient, so the "
                                 "final model was not saved")
        if finished:
            self._record_config()
        interrupted = interrupted or self.interrupt_requested  # Ctrl-C during the final log or evaluation
        if interrupted:
            raise KeyboardInterrupt
        check_replicas_identical(self.network, self.context, self.device)
        prior = None
        if finished and self.context.is_main and self.run_dir is not None:
            # cold diffusion: fit (and save in the run) the distribution generation starts from
            prior = prior_for_run(self.process, self.config, self.run_dir, self.train_data.images, save=True)
        if finished and tc.sample_grid and self.context.is_main and self.run_dir is not None:
            start = None if prior is None else start_sampler(prior, self.config.process.blur_start_noise)
            grid = write_class_grid(self.objective.sampling_network(), self.process, self.run_dir / "samples" /
                                    f"grid-step-{self.step:09d}.png", per_class=tc.sample_per_class,
                                    steps=tc.sample_steps, seed=tc.seed, device=self.device,
                                    progress=tc.progress, start=start)
            print(f"sample grid (one row per class, EMA weights): {grid}", flush=True)
            if self.tensorboard is not None:
                self.tensorboard.log_image_file("samples/grid", grid, self.step)
        return TrainResult(run_dir=self.run_dir, step=self.step, losses=logged)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        shutdown_distributed(self.context)


def train(config: RunConfig, resume: Optional[str | Path] = None, stop_at_step: Optional[int] = None,
          run_dir: Optional[Path] = None) -> TrainResult:
    """Train (or resume) a run and return where it was written."""
    trainer = Trainer(config, resume=resume, run_dir=run_dir)
    try:
        return trainer.run(stop_at_step=stop_at_step)
    finally:
        trainer.close()
