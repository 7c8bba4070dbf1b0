"""FID/KID/IS (and precision/recall) every K training steps, so metric-over-training curves come for free.

The evaluator is built before the first step, so a missing Inception file or reference dataset fails the
run at once, not hours in; the reference features are computed then (and cached for later runs). Each
evaluation samples the EMA network with per-sample seeds inside a forked RNG, so a run with evaluation on
trains exactly as the same run with it off (tests check the loss traces are identical).
"""

from __future__ import annotations

import time
import warnings

import torch

from dreamdata.config import RunConfig
from dreamdata.errors import ConfigError
from dreamdata.evaluation.extractor import resolve_extractor
from dreamdata.evaluation.feature_cache import extract_features
from dreamdata.evaluation.generated import sample_for_evaluation
from dreamdata.evaluation.sources import load_reference, reference_config
from dreamdata.evaluation.suite import EvaluationOptions, SmallSampleWarning, evaluate_images

__all__ = ["TrainingEvaluator"]

LOGGED = {"fid": "eval_fid", "kid_mean": "eval_kid", "kid_std": "eval_kid_std", "is_mean": "eval_is",
          "is_std": "eval_is_std", "precision": "eval_precision", "recall": "eval_recall"}


class TrainingEvaluator:
    """Computes ``config.evaluation.metrics`` of the model's samples against a fixed reference subset."""

    def __init__(self, config: RunConfig, class_names: list[str], device: torch.device, progress: bool = True):
        self.settings = config.evaluation
        # a GAN samples in one generator pass: evaluation.sampler/steps/guidance do not apply to it
        self.sampling = (("gan", 1, 0.0) if config.process.kind == "gan" else
                         (self.settings.sampler, self.settings.steps, self.settings.guidance))
        if config.process.kind not in ("gaussian", "gan"):
            raise ConfigError(f"config key evaluation.every: in-training evaluation samples Gaussian-diffusion "
                              f"and GAN runs; "
                              f"for process.kind={config.process.kind!r} evaluate the finished run with "
                              "`dreamdata evaluate RUN`")
        self.class_names = class_names
        self.device = device
        self.extractor = resolve_extractor(self.settings.fid_weights, device=device)
        self.reference = load_reference(reference_config(config.data), self.settings.reference_split,
                                        self.settings.reference_count, seed=self.settings.seed)
        extract_features(self.reference.images, self.extractor, progress=progress,
                         description=f"reference features ({len(self.reference)} images, once)")

    def due(self, step: int) -> bool:
        return self.settings.every > 0 and step % self.settings.every == 0

    def __call__(self, network, process) -> dict:
        """One evaluation of ``network`` (usually the EMA copy): ``{"eval_fid": ..., "eval_n": ..., ...}``."""
        s = self.settings
        sampler, steps, guidance = self.sampling
        started = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            samples = sample_for_evaluation(network, process, self.class_names, s.samples, seed=s.seed,
                                            sampler=sampler, steps=steps, guidance_scale=guidance,
                                            batch_size=s.batch_size, device=self.device, progress=False)
            options = EvaluationOptions(metrics=s.metrics, per_class=False, progress=False, seed=s.seed,
                                        kid_subset_size=min(1000, s.samples), is_splits=min(10, s.samples))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SmallSampleWarning)  # small N is the point here; eval_n says it
                result = evaluate_images(samples, self.reference, self.extractor, options)
        record = {LOGGED[key]: value for key, value in result.items() if key in LOGGED}
        record.update({"eval_n": s.samples, "eval_seconds": round(time.perf_counter() - started, 2)})
        return record
