"""Sample and score one sweep cell: one arm's checkpoint, one set of sampling settings, every metric asked.

Sample ``k`` of every cell is seeded from ``(evaluation.seed, k)`` and has class ``k mod K``
(:func:`dreamdata.evaluation.generated.balanced_labels`), so two cells start from the same noise image for
image and their mosaics compare one to one. The sample metrics go through the one evaluation protocol
(:func:`dreamdata.evaluation.suite.evaluate_images`, features cached by pixel hash); the others read the
test split prepared as the arm's data config says. The bound in bits/dim (``nll``) depends on the checkpoint
only, so it is computed once per checkpoint and kept beside the run, where ``evaluate --nll`` keeps its own.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dreamdata.atomic import atomic_path
from dreamdata.experiments.cells import Cell
from dreamdata.experiments.sweep_config import SweepConfig

__all__ = ["CellScorer"]

SAMPLE_METRICS = ("fid", "kid", "is", "pr")
KEPT_SAMPLES = "samples-unscored.npz"  # every sample of a cell, from sampling until its result is written


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)


def training_log_at(records: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """What a run's ``metrics.jsonl`` says at ``step``: the smoothed held-out loss logged last at or before it
    (the raw one when no EMA), the training minutes so far and the epoch."""
    held_out, minutes, epoch = None, None, None
    for record in records:
        if record.get("step", 0) > step:
            continue
        value = record.get("val_loss_ema", record.get("val_loss"))
        held_out = value if value is not None else held_out
        minutes = round(record["elapsed_s"] / 60, 2) if "elapsed_s" in record else minutes
        if epoch is None and record.get("step") and record.get("epoch") is not None:
            epoch = round(step * record["epoch"] / record["step"], 3)  # epochs per step, from any record
    return {"held_out_loss": held_out, "train_minutes": minutes, "epoch": epoch}


class CellScorer:
    """Scores cells of one sweep; keeps the feature extractor and reference sets between cells."""

    def __init__(self, sweep: SweepConfig, device: torch.device):
        self.sweep, self.device = sweep, device
        self._extractor = None
        self._references: dict[str, Any] = {}
        self._tests: dict[str, Any] = {}
        self._nll: dict[str, dict[str, Any]] = {}

    # -- shared inputs ---------------------------------------------------------------------------------

    def extractor(self):
        if self._extractor is None:
            from dreamdata.evaluation.extractor import resolve_extractor

            self._extractor = resolve_extractor(self.sweep.evaluation.fid_weights, device=self.device)
        return self._extractor

    def reference(self, data):
        from dreamdata.evaluation.sources import load_reference, reference_config

        config = reference_config(data)
        key = repr(config)
        if key not in self._references:
            e = self.sweep.evaluation
            self._references[key] = load_reference(config, e.ref_split, e.ref_n)  # evaluate's subset
        return self._references[key]

    def test_images(self, data):
        """The first ``evaluation.reconstruction_count`` test images (uint8) and labels, as the arm sees them."""
        from dreamdata.data import load_dataset
        from dreamdata.evaluation.sources import reference_config

        config = reference_config(data)
        key = repr(config)
        if key not in self._tests:
            test = load_dataset(config, "test")
            count = min(self.sweep.evaluation.reconstruction_count, len(test))
            self._tests[key] = (test.images[:count], test.labels[:count])
        return self._tests[key]

    def check_extractor(self) -> None:
        """Load the feature network now if the sweep's metrics need it, so that a missing one (no
        ``fid_weights``, no ``$DREAMDATA_FID_WEIGHTS``, no download) fails before training and sampling."""
        if any(m in self.sweep.metrics for m in (*SAMPLE_METRICS, "per_class_fid")):
            self.extractor()

    # -- one cell --------------------------------------------------------------------------------------

    @staticmethod
    def _kept_samples(cell_dir: Path, n: int):
        """The pixels and sampling seconds a cell saved before it was interrupted, or None. The cell
        directory names the checkpoint and sampling settings, and ``sweep.json`` fixes N and the seeds, so
        the kept samples are the ones this cell would draw again; a file of another size is ignored."""
        path = cell_dir / KEPT_SAMPLES
        if not path.is_file():
            return None
        with np.load(path) as kept:
            pixels, seconds = torch.from_numpy(kept["pixels"]), float(kept["sampling_seconds"])
        return (pixels, seconds) if pixels.shape[0] == n else None

    @staticmethod
    def discard_kept_samples(cell_dir: Path) -> None:
        """Delete the samples kept for a resume once the cell's result is written (they are N images)."""
        (cell_dir / KEPT_SAMPLES).unlink(missing_ok=True)

    def score(self, cell: Cell, run_dir: Path, cell_dir: Path) -> dict[str, Any]:
        """Sample the cell, score it, write ``samples.npz`` (the mosaic rows) and any trajectory into
        ``cell_dir``; return the cell's result line (without the timestamp)."""
        from dreamdata.evaluation.generated import balanced_labels
        from dreamdata.evaluation.suite import EvaluationOptions, ImageSet, evaluate_images
        from dreamdata.sampling.from_run import autoguide, distilled_sampling, start_distribution
        from dreamdata.sampling.generate import TrajectoryRecorder, generate, network_evaluations_per_sample
        from dreamdata.sampling.saving import to_uint8
        from dreamdata.training.pretrained import load_trained

        from dreamdata.training.run_dir import read_metrics

        e, s = self.sweep.evaluation, cell.sampling
        log = training_log_at(read_metrics(run_dir), cell.checkpoint_step)
        checkpoint = run_dir / "checkpoints" / f"step-{cell.checkpoint_step:09d}.safetensors"
        model = load_trained(checkpoint, device=self.device)
        if s.get("autoguide"):  # guided by the arm's own earlier checkpoint (Karras et al. 2024)
            model.network, _ = autoguide(model, int(s["autoguide_step"]), float(s["autoguide"]),
                                         option=f"sweep cell {cell.key}: autoguide_step")
        network, process = model.network, model.process
        num_classes = int(getattr(network, "num_classes", 0))
        conditional = num_classes > 0
        guidance = float(s["guidance"]) if conditional else 0.0
        # an earlier round's student of a distilled arm is distilled for more steps than the arm's cells use
        distilled_sampling(model.distilled, s["sampler"], int(s["steps"]), s["spacing"], guidance, s["eta"], process,
                           where=f"sweep cell {cell.key}: ")
        labels = balanced_labels(e.n, num_classes)
        recorder = None
        if e.trajectory_every:
            firsts = list(range(max(1, num_classes)))  # the first sample of each class
            recorder = TrajectoryRecorder(firsts, e.trajectory_every, int(s["steps"]))
        kept = self._kept_samples(cell_dir, e.n)
        if kept is not None:  # sampled before an interruption during scoring: not sampled again
            pixels, sampling_seconds = kept
            recorder = None  # its trajectory.npz was written with the samples
        else:
            start, _ = start_distribution(model, s["sampler"], s["start_noise"])
            options = {} if s["eta"] is None else {"eta": float(s["eta"])}
            started = time.perf_counter()
            images = generate(network, process, labels, e.n, e.seed, sampler=s["sampler"], steps=int(s["steps"]),
                              spacing=s["spacing"], guidance_scale=guidance,
                              guidance_interval=s.get("guidance_interval"), batch_size=e.batch, device=self.device,
                              x0_clip=s["x0_clip"], progress=True, on_step=recorder, start=start,
                              precision=s.get("precision", "fp32"), **options)
            sampling_seconds = time.perf_counter() - started
            pixels = to_uint8(images)
        # two evaluations per guided step (the doubled batch), one per other step
        evaluations = e.n * network_evaluations_per_sample(process, int(s["steps"]), s["spacing"], guidance,
                                                           s.get("guidance_interval"),
                                                           autoguided=bool(s.get("autoguide")))
        result: dict[str, Any] = {
            "n": e.n, "network_evaluations": evaluations, "checkpoint": str(checkpoint),
            "images_seen": cell.checkpoint_step * model.config.train.batch_size,
            "epoch": log["epoch"], "train_minutes": log["train_minutes"],
            "process": self._process_summary(model.config.process, process.num_steps),
            "class_names": list(model.class_names) if conditional else [],
        }
        metrics: dict[str, Any] = {}
        seconds: dict[str, float] = {"sampling": round(sampling_seconds, 2)}
        self._write_mosaic_rows(cell_dir, pixels, labels, max(1, num_classes))
        if recorder is not None:
            shown, x_t, x0_hat = recorder.stacked()
            _save_npz(cell_dir / "trajectory.npz", timesteps=np.array(shown), x_t=to_uint8(x_t).numpy(),
                      x0_hat=to_uint8(x0_hat).numpy())
        if kept is None:
            _save_npz(cell_dir / KEPT_SAMPLES, pixels=pixels.numpy(), sampling_seconds=np.array(sampling_seconds))

        wanted = self.sweep.metrics
        sample_metrics = [m for m in SAMPLE_METRICS if m in wanted]
        if sample_metrics or "per_class_fid" in wanted:
            reference = self.reference(model.config.data)
            samples = ImageSet(pixels, labels, list(model.class_names) if conditional else [],
                               f"{cell.key} ({e.n} samples)")
            options = EvaluationOptions(per_class="per_class_fid" in wanted, seed=e.seed,
                                        metrics=sample_metrics or ["fid"], progress=True)
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:  # kept in the result line, not printed per cell
                warnings.simplefilter("always")
                scores = evaluate_images(samples, reference, self.extractor(), options)
            result["warnings"] = sorted({str(w.message).split(": ", 1)[-1] for w in caught})
            seconds["evaluation"] = round(time.perf_counter() - started, 2)
            for key in ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "inception_score",
                        "precision", "recall", "fid_per_class"):
                if key in scores:
                    metrics[key] = scores[key]
            result["n_reference"] = scores["n_reference"]
            result["reference"] = scores["reference"]
        started = time.perf_counter()
        metrics.update(self._other_metrics(cell, model, log["held_out_loss"]))
        seconds["other_metrics"] = round(time.perf_counter() - started, 2)
        result.update({"metrics": metrics, "seconds": seconds,
                       "samples_per_s": round(e.n / sampling_seconds, 3) if sampling_seconds > 0 else None})
        return result

    def _other_metrics(self, cell: Cell, model, held_out_loss: Optional[float]) -> dict[str, Any]:
        e, s, wanted = self.sweep.evaluation, cell.sampling, self.sweep.metrics
        network, process, config = model.network, model.process, model.config
        gaussian = config.process.kind == "gaussian"
        conditional = int(getattr(network, "num_classes", 0)) > 0
        metrics: dict[str, Any] = {}
        if "held_out_loss" in wanted:
            metrics["held_out_loss"] = held_out_loss
        if "nll" in wanted and gaussian:
            metrics["nll"] = self.bits_per_dim(model)
        needs_test = {"reconstruction", "restoration", "blur_robustness"} & set(wanted)
        if not needs_test:
            return metrics
        clean, labels = self.test_images(config.data)
        labels = labels if conditional else None
        if "reconstruction" in wanted and gaussian:
            from dreamdata.evaluation.reconstruction import reconstruction_metrics

            metrics["reconstruction"] = reconstruction_metrics(network, process, clean, labels, count=len(clean),
                                                               seed=e.seed, batch_size=e.batch, device=self.device)
        if "restoration" in wanted and config.process.kind != "gan":  # a GAN corrupts nothing to restore
            from dreamdata.sampling.restore import degrade_and_restore, restoration_scores

            x0 = clean.float().div(127.5).sub(1.0)
            degraded, restored = degrade_and_restore(network, process, x0, labels, s["sampler"], int(s["steps"]),
                                                     e.seed, batch_size=e.batch, device=self.device,
                                                     x0_clip=s["x0_clip"])
            # the degraded input's own scores are the baseline a restoration has to beat
            metrics["restoration"] = {"test_images": len(clean), **restoration_scores(restored, x0),
                                      **{f"degraded_{key}": value
                                         for key, value in restoration_scores(degraded, x0).items()}}
        if "blur_robustness" in wanted and gaussian:
            from dreamdata.evaluation.blur_robustness import blur_robustness

            usable = [t for t in e.blur_t if t < process.num_steps]
            metrics["blur_robustness"] = blur_robustness(network, process, clean, e.blur_sigmas, usable, labels,
                                                         seed=e.seed, batch_size=e.batch,
                                                         kernel_size=e.blur_kernel, device=self.device)
        return metrics

    def bits_per_dim(self, model) -> dict[str, Any]:
        """The variational bound of ``model`` (EMA weights) on ``evaluation.nll_n`` seeded test images, in
        bits/dim (:func:`dreamdata.evaluation.likelihood.nll_bits_per_dim`); computed once per checkpoint and
        kept in ``RUN/eval/nll-…/nll.json``, the folder ``evaluate --nll`` with the same settings writes."""
        from dreamdata.evaluation.likelihood import nll_bits_per_dim, nll_folder_name
        from dreamdata.evaluation.sources import load_reference, reference_config
        from dreamdata.atomic import write_text_atomic
        from dreamdata.experiments.cells import read_json
        from dreamdata.finite_json import dumps as finite_dumps

        e = self.sweep.evaluation
        folder = nll_folder_name(e.nll_steps, model.process.num_steps, e.nll_n, e.seed, model.step)
        path = Path(model.checkpoint).parent.parent / "eval" / folder / "nll.json"
        key = str(path)
        if key not in self._nll:
            stored = read_json(path) if path.is_file() else None
            if stored is None or stored.get("weights", "ema") != "ema":
                test = load_reference(reference_config(model.config.data), e.ref_split, e.nll_n, seed=e.seed)
                conditional = int(getattr(model.network, "num_classes", 0)) > 0 and test.labels is not None
                labels = None
                if conditional:  # the test split's class indices as the run's (matched by class name)
                    labels = torch.tensor([list(model.class_names).index(test.class_names[int(y)])
                                           for y in test.labels.tolist()], dtype=torch.long)
                stored = nll_bits_per_dim(model.network, model.process, test.images, labels,
                                          nll_steps=e.nll_steps, seed=e.seed, batch_size=e.batch,
                                          device=self.device)
                stored.update({"command": "sweep nll", "checkpoint": str(model.checkpoint), "step": model.step,
                               "reference": test.source, "split": e.ref_split, "weights": "ema"})
                write_text_atomic(path, finite_dumps(stored, indent=2) + "\n")
            self._nll[key] = {name: stored[name] for name in
                              ("bits_per_dim", "bits_per_dim_stderr", "prior_bpd", "kl_sum_bpd", "decoder_bpd",
                               "n", "nll_steps", "estimate", "variance")}
        return self._nll[key]

    def _write_mosaic_rows(self, cell_dir: Path, pixels: torch.Tensor, labels, num_classes: int) -> None:
        """The first ``mosaic_per_class`` samples of each class (uint8 NCHW, row-major by class)."""
        per_class = self.sweep.evaluation.mosaic_per_class
        if labels is None:
            chosen = torch.arange(min(len(pixels), per_class * num_classes))
        else:
            chosen = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in range(num_classes)])
        _save_npz(cell_dir / "samples.npz", images=pixels[chosen].numpy(),
                  labels=(labels[chosen] if labels is not None else torch.full((len(chosen),), -1)).numpy(),
                  indices=chosen.numpy())

    @staticmethod
    def _process_summary(config, num_steps: int) -> dict[str, Any]:
        if config.kind == "gan":
            return {"kind": "gan", "num_steps": num_steps, "objective": config.gan_loss,
                    "diffaugment": config.diffaugment, "r1_gamma": config.r1_gamma}
        blur = config.kind == "blur"
        return {"kind": config.kind, "schedule": config.blur_schedule if blur else config.schedule,
                "num_steps": num_steps,
                "objective": f"x0-{config.blur_loss}" if blur else f"{config.prediction}-mse"}
