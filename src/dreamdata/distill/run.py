"""A distillation run: its directory, its checkpoints, its rounds, and an exact resume.

Layout (a run directory that ``sample``, ``evaluate``, ``dream`` and the sweep read like any other)::

    runs/00003-fashion-mnist-distilled-4/
        config.yaml, data.json, version.json   the teacher's config (named after this run) and data
        distill.json                           the plan: teacher, steps, grids, batch, lr, guidance, seed
        metrics.jsonl                          loss windows (step, round, teacher/student steps, loss, lr) and
                                               one line per finished round (round_loss: its mean)
        checkpoints/step-000000000.safetensors the teacher itself (its EMA weights): round 0's teacher
        checkpoints/step-<r K>.safetensors     the student of round r - 1 = round r's teacher (kept, K =
                                               steps per round); the newest mid-round checkpoint beside them

Global step ``g = r K + k`` is update ``k`` of round ``r``; every checkpoint from step ``K`` on records the
sampler its student is distilled for (:mod:`dreamdata.distill.record`). Batches are addressed by ``g``
(:class:`~dreamdata.data.BatchStream`), each update's draws by ``(seed, g)``, and the global RNG (the
student's dropout), the optimizer moments and the loss sums are checkpointed, so a run killed mid-round and
re-run with the same command continues exactly as if never stopped. Ctrl-C stops after the current update
and checkpoints there.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from dreamdata.atomic import remove_stale_temporaries, write_text_atomic
from dreamdata.config import config_json
from dreamdata.distill.plan import PLAN_FILE, DistillOptions, check_resumable, read_plan, resolve_plan
from dreamdata.distill.record import METADATA_KEY, DistilledSampler, read_distilled
from dreamdata.distill.round import DistillationRound
from dreamdata.errors import CheckpointError, DreamdataError
from dreamdata.training import checkpoint as ckpt
from dreamdata.training import run_dir as rd
from dreamdata.training.interrupt import interrupt_at_step_boundary
from dreamdata.training.pretrained import TrainedModel, load_trained
from dreamdata.training.setup import build_optimizer, capture_rng_state, resolve_device, restore_rng_state

# an epsilon teacher's students below this many steps degraded to noise here (Salimans & Ho 2022, sec. 4, explain
# why; BENCHMARKS.md has the measurement), so distilling one further gets a warning
EPSILON_FEW_STEPS = 32

__all__ = ["DistillResult", "default_out_dir", "distill_run"]


@dataclass
class DistillResult:
    run_dir: Path
    step: int  # global updates done
    complete: bool
    distilled: Optional[DistilledSampler]  # the newest checkpoint's record


def default_out_dir(teacher_run: Path, to_steps: int) -> Path:
    """``<teacher run>-distilled-<N>`` beside the teacher run (``runs/00003-fmnist-distilled-4``)."""
    return teacher_run.parent / f"{teacher_run.name}-distilled-{to_steps}"


def _record(plan: dict[str, Any], round_index: int) -> DistilledSampler:
    grid = plan["grids"][round_index + 1]
    return DistilledSampler(steps=len(grid), timesteps=tuple(grid), guidance=plan["baked_guidance"],
                            x0_clip=plan["x0_clip"], teacher_steps=len(plan["grids"][round_index]),
                            round=round_index, rounds=plan["rounds"])


class Distillation:
    """The rounds of one plan in one run directory (made by :func:`distill_run`)."""

    def __init__(self, run_dir: Path, plan: dict[str, Any], teacher: TrainedModel, data_info: dict,
                 device: torch.device, progress: bool) -> None:
        from dreamdata.data import BatchStream, load_dataset, resolve_hflip, split_validation

        self.run_dir, self.plan, self.device, self.progress = run_dir, plan, device, progress
        self.config = replace(teacher.config, name=run_dir.name)
        self.process = teacher.process
        self.data_info = data_info
        self.network = teacher.network  # round 0's teacher; copied into checkpoint 0
        self.null_class = getattr(teacher.network, "null_class", None)
        self.conditional = int(getattr(teacher.network, "num_classes", 0)) > 0
        data = load_dataset(self.config.data, "train")
        train, _ = split_validation(data, self.config.data.val_fraction, self.config.data.split_seed)
        self.stream = BatchStream(train, plan["batch_size"], seed=plan["seed"],
                                  hflip=resolve_hflip(self.config.data.hflip, self.config.data.dataset), device=device)
        self.steps_per_round = plan["steps_per_round"]
        self.total_steps = plan["rounds"] * self.steps_per_round
        self.stop_requested = False

    # -- checkpoints ---------------------------------------------------------------------------------
    def _metadata(self, distilled: Optional[DistilledSampler]) -> dict[str, str]:
        metadata = {"config": config_json(self.config), "data": json.dumps(self.data_info)}
        if distilled is not None:
            metadata[METADATA_KEY] = distilled.to_json()
        return metadata

    def _round_end(self, step: int) -> bool:
        return step % self.steps_per_round == 0

    def save(self, step: int, student: torch.nn.Module, state: dict[str, Any],
             distilled: Optional[DistilledSampler]) -> Path:
        """Checkpoint ``student`` at global ``step`` (as both ``model`` and ``ema``: the student has no average),
        then delete mid-round checkpoints other than this one; round ends are kept (each is a teacher)."""
        path = ckpt.save_checkpoint(self.run_dir, step, student, student, {"step": step, "distill": True, **state},
                                    self._metadata(distilled), keep=0)
        for old in (self.run_dir / ckpt.CHECKPOINT_DIR).glob("step-*.safetensors"):
            old_step = int(old.name.split("-")[1].split(".")[0])
            if old_step != step and not self._round_end(old_step):
                old.unlink(missing_ok=True)
                old.with_suffix("").with_suffix(".state.pt").unlink(missing_ok=True)
        return path

    def _load_network(self, step: int) -> torch.nn.Module:
        """A copy of the network saved at global ``step`` (a round's teacher, or the student it starts from)."""
        path = self.run_dir / ckpt.CHECKPOINT_DIR / f"{ckpt.checkpoint_name(step)}.safetensors"
        weights = ckpt.load_weights(path, device=self.device)
        network = copy.deepcopy(self.network)
        ckpt.load_into(network, weights.ema, path)
        return network

    # -- the loop ------------------------------------------------------------------------------------
    def _request_stop(self) -> None:
        self.stop_requested = True
        print("\nCtrl-C: stopping after this update to save a checkpoint (press it again to stop at once, "
              "without one)", file=sys.stderr, flush=True)

    def run(self, stop_at_step: Optional[int] = None) -> DistillResult:
        """Continue from the newest checkpoint until every round is done, or until ``stop_at_step`` (which stops
        as a kill would: without a checkpoint, for tests of the resume)."""
        loaded = ckpt.load_latest(self.run_dir, device=self.device, with_state=True)
        state = loaded.state
        step = state["step"]
        if state.get("rng") is not None:
            restore_rng_state(state["rng"], self.device)
        rd.truncate_metrics(self.run_dir, step)  # windows logged after the checkpoint are redone
        window = list(state.get("window", [0.0, 0]))
        round_sum = list(state.get("round_loss", [0.0, 0]))
        elapsed = float(state.get("elapsed", 0.0))
        student, optimizer, current = None, None, None
        log_every, checkpoint_every = self.plan["log_every"], self.plan["checkpoint_every"]
        bar = tqdm(total=self.total_steps, initial=step, unit="step", dynamic_ncols=True, disable=not self.progress,
                   desc="distill")
        clock = time.perf_counter()
        try:
            with interrupt_at_step_boundary(self._request_stop):
                while step < self.total_steps and not self.stop_requested and step != stop_at_step:
                    round_index, k = divmod(step, self.steps_per_round)
                    if current is None or current[0] != round_index:
                        student, optimizer, current = self._start_round(round_index, k, loaded, student)
                        teacher_steps = len(self.plan["grids"][round_index])
                        bar.set_description(f"distill round {round_index + 1}/{self.plan['rounds']}: "
                                            f"{teacher_steps} -> {teacher_steps // 2} steps")
                    images, labels = self.stream.batch(step)
                    loss = current[1].step(k, step, images, labels if self.conditional else None)
                    step += 1
                    window = [window[0] + loss, window[1] + 1]
                    round_sum = [round_sum[0] + loss, round_sum[1] + 1]
                    now = time.perf_counter()
                    elapsed, clock = elapsed + now - clock, now
                    bar.update(1)
                    if step % log_every == 0 or self._round_end(step):
                        self._log(step, round_index, window, current[1].lr_at(k), elapsed)
                        bar.set_postfix(loss=f"{window[0] / window[1]:.4g}")
                        window = [0.0, 0]
                    finished = self._round_end(step)
                    if finished:
                        self._log_round(step, round_index, round_sum)
                        round_sum = [0.0, 0]
                    if finished or self.stop_requested or (checkpoint_every and step % checkpoint_every == 0):
                        loaded = None  # the round's start is on disk now, or the student in memory is newer
                        state = {"optimizer": optimizer.state_dict(), "rng": capture_rng_state(self.device),
                                 "window": window, "round_loss": round_sum, "elapsed": elapsed}
                        self.save(step, student, state, _record(self.plan, round_index))
        finally:
            bar.close()
        if self.stop_requested:
            print(f"interrupted: stopped after update {step}, checkpoint saved; re-run the same command to "
                  "continue", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        newest = ckpt.load_latest(self.run_dir)
        return DistillResult(self.run_dir, step, step >= self.total_steps,
                             read_distilled(newest.weights.metadata, newest.path))

    def _start_round(self, round_index: int, k: int, loaded, student):
        """Round ``round_index`` from update ``k``: its teacher (the checkpoint at the round's start), its
        student (that checkpoint's copy at ``k = 0``, else the newest checkpoint's, with its optimizer)."""
        start = round_index * self.steps_per_round
        teacher = self._load_network(start)
        if k == 0:
            student = copy.deepcopy(teacher)  # Salimans & Ho 2022, Algorithm 2: the student starts as the teacher
        elif student is None:
            student = self._load_network(start + k)
        student.requires_grad_(True).train()
        tc = replace(self.config.train, lr=self.plan["lr"])
        optimizer = build_optimizer(student.parameters(), tc)
        if k > 0:
            if loaded is None or loaded.state.get("optimizer") is None:
                raise CheckpointError(f"{self.run_dir}: the checkpoint at update {start + k} has no optimizer state "
                                      "to continue its round from")
            optimizer.load_state_dict(loaded.state["optimizer"])
        distillation = DistillationRound(teacher, student, self.process, self.plan["grids"][round_index], optimizer,
                                         self.steps_per_round, self.plan["lr"], grad_clip=tc.grad_clip,
                                         guidance_scale=self.plan["guidance"], null_class=self.null_class,
                                         x0_clip=self.plan["x0_clip"], seed=self.plan["seed"])
        return student, optimizer, (round_index, distillation)

    def _log(self, step: int, round_index: int, window: list, lr: float, elapsed: float) -> None:
        teacher_steps = len(self.plan["grids"][round_index])
        rd.log_metrics(self.run_dir, {"step": step, "round": round_index, "teacher_steps": teacher_steps,
                                      "student_steps": teacher_steps // 2, "loss": window[0] / max(window[1], 1),
                                      "lr": lr, "elapsed_s": round(elapsed, 2)})

    def _log_round(self, step: int, round_index: int, round_sum: list) -> None:
        teacher_steps = len(self.plan["grids"][round_index])
        mean = round_sum[0] / max(round_sum[1], 1)
        rd.log_metrics(self.run_dir, {"step": step, "round": round_index, "teacher_steps": teacher_steps,
                                      "student_steps": teacher_steps // 2, "round_loss": mean,
                                      "round_updates": round_sum[1]})
        tqdm.write(f"round {round_index + 1}/{self.plan['rounds']}: {teacher_steps} -> {teacher_steps // 2} steps, "
                   f"mean loss {mean:.4g}; checkpoint step {step}")


def _claim(out: Path, plan: dict[str, Any]) -> bool:
    """Whether ``out`` continues a distillation (True) or is new or empty (False, created); an error for a
    directory holding anything else, or a distillation of another plan."""
    if out.exists() and not out.is_dir():
        raise DreamdataError(f"--out {out}: is a file, not a directory")
    recorded = read_plan(out) if out.is_dir() else None
    if recorded is not None:
        check_resumable(recorded, plan, out)
        if ckpt.latest_checkpoint(out) is not None:
            return True
        (out / PLAN_FILE).unlink()  # stopped before its first checkpoint (the teacher's copy): start again
        rd.discard_unstarted_run(out)
    if out.is_dir() and any(out.iterdir()):
        raise DreamdataError(f"--out {out}: not empty and not a distillation run; give a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    return False


def distill_run(teacher_path: str | Path, options: DistillOptions, out: Optional[str | Path] = None,
                device: str = "auto", progress: bool = True, stop_at_step: Optional[int] = None) -> DistillResult:
    """Progressively distil the run (or ``.safetensors`` checkpoint) ``teacher_path`` into ``out`` (default
    :func:`default_out_dir`), or continue the distillation already there."""
    resolved_device = resolve_device(device)
    teacher_run = rd.resolve_run_dir(teacher_path)
    teacher = load_trained(teacher_path, use_ema=True, device=resolved_device)
    plan = resolve_plan(options, teacher, teacher_run)
    if plan["prediction"] == "epsilon" and plan["to_steps"] < EPSILON_FEW_STEPS:
        warnings.warn(f"{teacher_run} predicts epsilon, whose x-space error at the noisiest step is sigma/alpha times "
                      f"its epsilon error: below {EPSILON_FEW_STEPS} steps its students may degrade to noise "
                      "(measured, BENCHMARKS.md: the Fashion-MNIST study's generator at 500 updates per halving gave "
                      "clean 32-step, half-noise 16-step and all-noise 4-step students); train the teacher with "
                      "process.prediction=v to distil to few steps", stacklevel=2)
    out_dir = Path(out).expanduser() if out is not None else default_out_dir(teacher_run, plan["to_steps"])
    if out_dir.resolve() == teacher_run.resolve():
        raise DreamdataError(f"--out {out_dir}: is the teacher's run directory; give another")
    data_info = json.loads(ckpt.load_weights(teacher.checkpoint).metadata["data"])
    resuming = _claim(out_dir, plan)
    if resuming:
        remove_stale_temporaries(out_dir, recursive=True)
    torch.manual_seed(plan["seed"])  # the student's dropout; saved and restored with every checkpoint
    distillation = Distillation(out_dir, plan, teacher, data_info, resolved_device, progress)
    if not resuming:
        rd.write_run_files(out_dir, distillation.config, data_info)
        write_text_atomic(out_dir / PLAN_FILE, json.dumps(plan, indent=2) + "\n")
        distillation.save(0, teacher.network, {"rng": capture_rng_state(resolved_device)}, teacher.distilled)
    return distillation.run(stop_at_step=stop_at_step)
