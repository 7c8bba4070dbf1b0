"""Train every arm of a study over seeds, evaluate on the real test split, and report with error bars.

For each seed ``s`` and each arm, a fresh classifier is trained with the *same* budget (the same number of
optimiser steps of the same batch size, :class:`~dreamdata.classify.train.ClassifierConfig`) and the same
seed, then scored on the real test images. Results are appended to ``results.jsonl`` one (arm, seed) at a
time, so an interrupted study resumes where it stopped. The report (``summary.json``, ``summary.md``,
``confusion-<arm>.png``) gives per arm the accuracy mean ± std over seeds, per-class precision / recall /
F1 (mean over seeds) and the confusion matrix summed over seeds; and for every arm against the first (the
baseline, normally ``real``) the paired difference with its 95% CI and p-value
(:func:`~dreamdata.classify.stats.paired_comparison`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from dreamdata.atomic import append_line, write_text_atomic
from dreamdata.classify.metrics import accuracy, class_scores, confusion_matrix
from dreamdata.classify.stats import mean_std, paired_comparison
from dreamdata.classify.train import (
    ClassifierConfig,
    predict_probabilities,
    train_classifier,
)
from dreamdata.data.image_data import ImageData
from dreamdata.errors import DataError
from dreamdata.finite_json import dumps as finite_dumps
from dreamdata.finite_json import restore as restore_nonfinite
from dreamdata.experiments.study.arms import (
    arm_file_stem,
    arm_stages,
    arm_training_set,
    parse_arms,
    synthetic_subset,
    uses_synthetic,
)

RESULTS = "results.jsonl"


@dataclass
class AugmentConfig:
    """What an augmentation study compares and how each classifier is trained."""

    arms: list[str] = field(default_factory=lambda: ["real", "real+synthetic", "synthetic"])
    seeds: int = 5  # classifier seeds 0 .. seeds-1; every arm is trained once per seed
    synthetic_ratio: float | None = None  # synthetic images per real image and class; None = all
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


def data_sha256(data: ImageData | None) -> str | None:
    """Hash of a dataset's pixels and labels, so a resumed study never reuses results from other data."""
    if data is None:
        return None
    digest = hashlib.sha256(data.images.cpu().contiguous().numpy().tobytes())
    digest.update(data.labels.cpu().numpy().tobytes())
    return digest.hexdigest()


def _identity(config: AugmentConfig, real: ImageData, synthetic: ImageData | None, test: ImageData) -> dict:
    """What a results line must match to be reused on resume: the classifier, the training sets and the
    images it was scored on (``augment --real-test`` can point the same study directory at another set)."""
    return {"classifier": asdict(config.classifier), "synthetic_ratio": config.synthetic_ratio,
            "real_count": len(real), "synthetic_count": len(synthetic) if synthetic is not None else 0,
            "real_sha256": data_sha256(real), "synthetic_sha256": data_sha256(synthetic),
            "test_count": len(test), "test_sha256": data_sha256(test)}


SYNTHETIC_KEYS = ("synthetic_ratio", "synthetic_count", "synthetic_sha256")
TEST_KEYS = ("test_count", "test_sha256")


def arm_identity(identity: dict, arm: str) -> dict:
    """The part of ``identity`` an arm's result depends on: an arm without synthetic images does not
    depend on the synthetic set, so its results are reused when only the synthetic set changes (a study
    comparing several dreamed sets trains its real-only baseline once)."""
    if uses_synthetic(arm):
        return identity
    return {key: value for key, value in identity.items() if key not in SYNTHETIC_KEYS}


def _matches(recorded: dict, identity: dict, arm: str) -> bool:
    """Whether a results line with identity ``recorded`` is this study's ``arm``. A line written before the
    test set was recorded (studies before session 19) is matched on what it recorded."""
    wanted = arm_identity(identity, arm)
    if "test_sha256" not in recorded:
        wanted = {key: value for key, value in wanted.items() if key not in TEST_KEYS}
    return arm_identity(recorded, arm) == wanted


def _read_results(path: Path, identities: dict[str, dict]) -> dict[tuple[str, int], dict]:
    """The results lines of ``path`` that match their arm's identity (``identities``: arm -> identity)."""
    done: dict[tuple[str, int], dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = restore_nonfinite(json.loads(line))
                arm = record.get("arm", "")
                if arm in identities and _matches(record.get("identity") or {}, identities[arm], arm):
                    done[(arm, record["seed"])] = record
    return done


def arm_classifier(config: AugmentConfig, arm: str, arm_steps: dict[str, int] | None) -> ClassifierConfig:
    """The classifier config of ``arm``: the study's, with the arm's own step budget where ``arm_steps`` gives
    one (a study that chose each arm's budget on held-out images, :mod:`~dreamdata.experiments.study.selection`)."""
    if arm_steps is None or arm not in arm_steps:
        return config.classifier
    return replace(config.classifier, steps=int(arm_steps[arm]))


def run_augment(real: ImageData, test: ImageData, synthetic: ImageData | None, config: AugmentConfig,
                out_dir: str | Path, device: torch.device | str = "cpu",
                log: Callable[[str], None] = print, arm_steps: dict[str, int] | None = None) -> dict:
    """Run (or finish) the study into ``out_dir`` and write its report; returns the summary. ``arm_steps``
    (arm -> optimiser steps) replaces ``config.classifier.steps`` for the arms it names."""
    arms = parse_arms(config.arms)
    if test.class_names != real.class_names:
        raise DataError(f"the test split's classes {test.class_names} differ from the training split's "
                        f"{real.class_names}")
    if synthetic is not None:
        synthetic = synthetic_subset(synthetic, real, config.synthetic_ratio)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = _identity(config, real, synthetic, test)
    classifiers = {arm: arm_classifier(config, arm, arm_steps) for arm in arms}
    # the data hashes are the same for every arm; only the classifier (its steps) may differ
    identities = {arm: {**identity, "classifier": asdict(classifiers[arm])} for arm in arms}
    done = _read_results(out_dir / RESULTS, identities)
    for seed in range(config.seeds):
        for arm in arms:
            if (arm, seed) in done:
                continue
            started = time.perf_counter()
            network, stage_images = None, []
            stages = arm_stages(arm)
            for stage in stages:  # one stage for a plain arm; a staged arm fine-tunes stage by stage
                images, labels = arm_training_set(stage, real, synthetic)
                label = f"seed {seed} {arm}" + (f" [{stage}]" if len(stages) > 1 else "")
                network = train_classifier(images, labels, real.num_classes, classifiers[arm], seed=seed,
                                           device=device, initial=network, progress=label)
                stage_images.append(len(images))
            train_seconds = time.perf_counter() - started
            predicted = predict_probabilities(network, test.images, config.classifier.eval_batch_size).argmax(1)
            confusion = confusion_matrix(test.labels, predicted, real.num_classes)
            record = {"arm": arm, "seed": seed, "accuracy": accuracy(confusion), "train_images": sum(stage_images),
                      "stage_images": stage_images, "train_steps": classifiers[arm].steps * len(stage_images),
                      "train_seconds": round(train_seconds, 2), "confusion": confusion.tolist(),
                      "identity": arm_identity(identities[arm], arm)}
            append_line(out_dir / RESULTS, finite_dumps(record))
            done[(arm, seed)] = record
            log(f"augment: seed {seed} {arm:<16} accuracy {record['accuracy']:.4f} "
                f"({describe_training_images(record)} training images, {train_seconds:.1f} s)")
    summary = summarise(done, arms, config, real.class_names, identity, test.source, classifiers)
    write_report(out_dir, summary, real.class_names)
    return summary


def summarise(done: dict[tuple[str, int], dict], arms: list[str], config: AugmentConfig,
              class_names: list[str], identity: dict, test_source: str,
              classifiers: dict[str, ClassifierConfig] | None = None) -> dict:
    """Accuracy mean ± std per arm, per-class scores, summed confusion, paired comparisons with the first arm;
    ``test_source`` names the images every classifier was scored on (e.g. ``fashion-mnist (test)``);
    ``classifiers`` (arm -> its config) gives each arm's steps per stage when they differ from the study's."""
    seeds = list(range(config.seeds))
    per_arm = {}
    for arm in arms:
        records = [done[(arm, seed)] for seed in seeds]
        accuracies = [r["accuracy"] for r in records]
        confusions = [torch.tensor(r["confusion"]) for r in records]
        scores = [class_scores(c) for c in confusions]
        mean, std = mean_std(accuracies)
        per_arm[arm] = {
            "accuracy_mean": mean, "accuracy_std": std, "accuracies": accuracies,
            "train_images": records[0]["train_images"],
            "stage_images": records[0].get("stage_images", [records[0]["train_images"]]),
            "train_steps": records[0].get("train_steps", config.classifier.steps),
            "steps_per_stage": (classifiers or {}).get(arm, config.classifier).steps,
            "train_seconds_mean": sum(r["train_seconds"] for r in records) / len(records),
            "precision": torch.stack([s.precision for s in scores]).mean(0).tolist(),
            "recall": torch.stack([s.recall for s in scores]).mean(0).tolist(),
            "f1": torch.stack([s.f1 for s in scores]).mean(0).tolist(),
            "confusion_sum": torch.stack(confusions).sum(0).tolist(),
        }
    baseline = arms[0]
    comparisons = {f"{arm} - {baseline}": paired_comparison(per_arm[baseline]["accuracies"],
                                                           per_arm[arm]["accuracies"]).to_dict()
                   for arm in arms[1:]}
    return {"arms": per_arm, "comparisons": comparisons, "baseline": baseline, "seeds": seeds,
            "class_names": class_names, "config": asdict(config), "data": identity,
            "test": {"source": test_source, "images": identity["test_count"],
                     "described": f"{test_source}, {identity['test_count']} images"}}


def tested_on(summary: dict) -> str:
    """What the classifiers were scored on, for headings (``fashion-mnist (test), 10000 images``); a summary
    written before the test set was recorded says ``the real test split``."""
    return (summary.get("test") or {}).get("described", "the real test split")


def describe_training_images(row: dict) -> str:
    """``5000``, or a staged arm's sets in training order: ``10000 > 5000``."""
    stages = row.get("stage_images") or [row["train_images"]]
    return " > ".join(str(count) for count in stages)


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def staged_note(arms: dict) -> str:
    """The sentence a report needs when an arm trains in stages (its budget is per stage), else ``""``."""
    staged = [arm for arm in arms if len(arm_stages(arm)) > 1]
    if not staged:
        return ""
    return (f" Staged arms ({', '.join(staged)}) train each stage for that many steps, each stage from the "
            "previous one's weights with a fresh optimiser and schedule.")


def summary_markdown(summary: dict) -> str:
    """The study's tables: accuracy per arm, paired differences, per-class P/R/F1 and confusion per arm."""
    arms, names = summary["arms"], summary["class_names"]
    n = len(summary["seeds"])
    c = summary["config"]["classifier"]
    own_steps = len({row.get("steps_per_stage", c["steps"]) for row in arms.values()}) > 1
    budget = "each arm's own steps (the table's steps column)" if own_steps else f"{c['steps']} steps"
    lines = [f"Classifier (every arm and seed): {c['network']}, {budget} of batch {c['batch_size']}, "
             f"lr {c['lr']:g}; horizontal flips {'on' if c['hflip'] else 'off'}, random shifts up to "
             f"{c['crop_padding']} px." + staged_note(arms), "",
             f"## Accuracy on {tested_on(summary)} ({n} seeds, mean ± std)", "",
             "| arm | training images | " + ("steps | " if own_steps else "")
             + "accuracy % | per-seed % | train s/seed |",
             "| --- | --: | " + ("--: | " if own_steps else "") + "--: | --- | --: |"]
    for arm, row in arms.items():
        lines.append(f"| {arm} | {describe_training_images(row)} "
                     + (f"| {row.get('steps_per_stage', c['steps'])} " if own_steps else "")
                     + f"| {_pct(row['accuracy_mean'])} ± {_pct(row['accuracy_std'])} "
                     f"| {', '.join(_pct(a) for a in row['accuracies'])} | {row['train_seconds_mean']:.1f} |")
    if summary["comparisons"]:
        lines += ["", "## Paired differences (same seeds; Student t, 95% CI)", "",
                  "| comparison | mean diff (points) | 95% CI | t | p |", "| --- | --: | --- | --: | --: |"]
        for name, c in summary["comparisons"].items():
            lines.append(f"| {name} | {_pct(c['mean_difference'])} | [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}] "
                         f"| {c['t']:.2f} | {c['p_value']:.3g} |")
    for arm, row in arms.items():
        lines += ["", f"## Per-class scores: {arm} (mean over seeds)", "",
                  "| class | precision | recall | F1 |", "| --- | --: | --: | --: |"]
        for k, name in enumerate(names):
            lines.append(f"| {name} | {row['precision'][k]:.3f} | {row['recall'][k]:.3f} | {row['f1'][k]:.3f} |")
        lines += ["", f"Confusion matrix, {arm} (summed over seeds; rows = true class, columns = predicted):", "",
                  "| true \\ predicted | " + " | ".join(names) + " |", "| --- |" + " --: |" * len(names)]
        for k, name in enumerate(names):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row["confusion_sum"][k]) + " |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, summary: dict, class_names: list[str]) -> None:
    """``summary.json``, ``summary.md`` and ``confusion-<arm>.png`` (summed over seeds) into ``out_dir``."""
    from dreamdata.reports.confusion import write_confusion_png

    write_text_atomic(out_dir / "summary.json", finite_dumps(summary, indent=2) + "\n")
    write_text_atomic(out_dir / "summary.md", summary_markdown(summary))
    for arm, row in summary["arms"].items():
        write_confusion_png(out_dir / f"confusion-{arm_file_stem(arm)}.png", torch.tensor(row["confusion_sum"]),
                            class_names, f"{arm}: confusion over {len(summary['seeds'])} seeds "
                                         f"(accuracy {_pct(row['accuracy_mean'])}%)")
