"""Each arm's classifier budget, chosen per K on held-out *training* images before the test run.

Why: a budget fixed for every arm (the study's ``classifier_epochs`` rule) can stop a classifier before it
levels off, and then the study compares under-trained classifiers (Fashion-MNIST K = 500: the real-only
classifier gains 2.3 points from 1,000 to 4,000 steps, BENCHMARKS.md). Choosing the budget on the test set
would tune on the answer; choosing it on images the K's classifiers and generator never see is ordinary model
selection, stated in advance:

* **Candidates** ``ceil(m x B)`` for each ``m`` in ``classifier_selection.multiples``, with ``B`` the K's
  classifier steps (the rule's or the list's), resolved with the other budgets before anything runs.
* **Held-out images** ``heldout_per_class`` real training images per class (a shuffle seeded by
  ``classifier_selection.seed``) from the training images *outside* the K split. When the split leaves fewer
  than that in some class (K = all), they are set aside from the split itself, and the selection runs train
  on the rest of it; the test run then trains on the whole split. The generator has then seen the held-out
  images (it trains on the whole split), so a synthetic arm's held-out score is not blind to them; the choice
  is still made without the test set.
* **Choice** every arm is trained at every candidate with ``classifier_selection.seeds`` seeds (the study's
  seeds 0, 1, ...) and scored on the held-out images; each arm takes the candidate with its highest mean
  accuracy, a tie to fewer steps (:func:`choose_steps`). Arms may end with different budgets: each is
  compared at the budget its own held-out score chose.
* **Past the grid** an arm whose best is its largest candidate has not levelled off, so a choice there would
  be the grid's edge, not the arm's: with ``classifier_selection.max_multiple`` set, that arm also trains at
  twice its largest candidate, and again while the largest stays best, up to ``ceil(max_multiple x B)``.

The runs live in ``K*/selection/steps-<n>/`` (each an ``augment`` study directory, so they resume) and the
choice in ``K*/selection/choice.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dreamdata.atomic import write_text_atomic
from dreamdata.data.image_data import ImageData, cap_per_class, per_class_indices
from dreamdata.errors import ConfigError
from dreamdata.experiments.study.augment import AugmentConfig, run_augment
from dreamdata.experiments.study.config import ClassifierSelectionConfig

CHOICE = "choice.json"


@dataclass
class HeldOutSplit:
    """The images a K's selection runs train on, and the real images they are scored on."""

    train: ImageData  # the K split, or (when the held-out images came from it) the rest of it
    heldout: ImageData
    from_split: bool  # whether the held-out images were set aside from the K split itself

    def describe(self) -> str:
        where = "set aside from the K split (the selection runs train on the rest of it)" if self.from_split else \
            "from the training images outside the K split"
        counts = self.heldout.class_counts()
        return f"{int(counts.min())} held-out training images per class, {where}"


def heldout_split(full: ImageData, per_class: int | None, split_seed: int,
                  selection: ClassifierSelectionConfig) -> HeldOutSplit:
    """Hold out ``selection.heldout_per_class`` images per class of ``full`` (the whole training split), away
    from the K split that ``per_class`` and ``split_seed`` pick from it (as ``load_dataset`` picks it)."""
    wanted = selection.heldout_per_class
    in_split = (per_class_indices(full, per_class, split_seed) if per_class is not None
                else torch.arange(len(full)))
    outside = torch.ones(len(full), dtype=torch.bool)
    outside[in_split] = False
    others = full.subset(outside)
    split = full.subset(in_split)
    if len(others) and int(others.class_counts().min()) >= wanted:
        heldout = cap_per_class(others, wanted, selection.seed)
        heldout.source = f"{full.source}, {wanted} per class held out from outside the K split"
        return HeldOutSplit(split, heldout, from_split=False)
    counts = split.class_counts()
    if int(counts.min()) <= wanted:
        name = split.class_names[int(counts.argmin())]
        raise ConfigError(f"config key classifier_selection.heldout_per_class: {wanted} images per class cannot be "
                          f"held out: the training images outside the K split have fewer in some class, and the "
                          f"split's class {name!r} has only {int(counts.min())} (lower heldout_per_class)")
    chosen = per_class_indices(split, wanted, selection.seed)
    rest = torch.ones(len(split), dtype=torch.bool)
    rest[chosen] = False
    heldout = split.subset(chosen)
    heldout.source = f"{full.source}, {wanted} per class held out from the K split"
    return HeldOutSplit(split.subset(rest), heldout, from_split=True)


def choose_steps(scores: dict[int, list[float]]) -> int:
    """The budget with the highest mean held-out accuracy; a tie goes to fewer steps."""
    best = None
    for steps in sorted(scores):
        mean = sum(scores[steps]) / len(scores[steps])
        if best is None or mean > best[1]:
            best = (steps, mean)
    return best[0]


def still_rising(scores: dict[str, dict[int, list[float]]], limit: int | None) -> dict[str, int]:
    """Arm -> the doubled budget it tries next: the arms whose best is their largest candidate so far, while
    doubling that stays within ``limit`` (None = no doubling)."""
    if limit is None:
        return {}
    return {arm: 2 * max(by_steps) for arm, by_steps in scores.items()
            if choose_steps(by_steps) == max(by_steps) and 2 * max(by_steps) <= limit}


def select_classifier_steps(split: HeldOutSplit, synthetic: ImageData | None, config: AugmentConfig,
                            candidates: list[int], selection: ClassifierSelectionConfig, out_dir: Path,
                            device: torch.device | str = "cpu", log: Callable[[str], None] = print,
                            limit: int | None = None) -> dict:
    """Train every arm at every candidate on ``split``, score on its held-out images (doubling an arm's budget
    past the grid while its largest candidate is best, up to ``limit`` steps), and choose each arm's budget;
    writes and returns the record (``chosen``: arm -> steps, ``scores``: arm -> steps -> accuracies)."""
    scores: dict[str, dict[int, list[float]]] = {arm: {} for arm in config.arms}

    def score(steps: int, arms: list[str]) -> None:
        log(f"selection: {', '.join(arms)} at {steps} classifier steps, {selection.seeds} seeds, scored on "
            f"{len(split.heldout)} held-out training images")
        run_config = replace(config, arms=arms, seeds=selection.seeds,
                             classifier=replace(config.classifier, steps=steps))
        summary = run_augment(split.train, split.heldout, synthetic, run_config, out_dir / f"steps-{steps}",
                              device=device, log=log)
        for arm in arms:
            scores[arm][steps] = summary["arms"][arm]["accuracies"]

    for steps in candidates:
        score(steps, list(config.arms))
    while rising := still_rising(scores, limit):
        for steps in sorted(set(rising.values())):
            score(steps, [arm for arm in config.arms if rising.get(arm) == steps])
    chosen = {arm: choose_steps(scores[arm]) for arm in config.arms}
    record = {"candidates": candidates, "limit": limit, "seeds": selection.seeds, "heldout": split.describe(),
              "heldout_images": len(split.heldout), "selection_train_images": len(split.train),
              "rule": "per arm, the candidate with the highest mean held-out accuracy (a tie to fewer steps)",
              "chosen": chosen,
              "scores": {arm: {str(steps): values for steps, values in by_steps.items()}
                         for arm, by_steps in scores.items()}}
    write_text_atomic(out_dir / CHOICE, json.dumps(record, indent=2) + "\n")
    log("selection: chosen classifier steps: " + ", ".join(f"{arm} {steps}" for arm, steps in chosen.items()))
    return record


def held_out_means(record: dict) -> tuple[list[int], dict[str, list[float | None]]]:
    """``(budgets tried, arm -> mean held-out accuracy at each)``, None where an arm did not try a budget (it
    levelled off before it): the table both the summary and the report show."""
    tried = sorted({int(steps) for by_steps in record["scores"].values() for steps in by_steps})
    means = {arm: [(sum(v) / len(v)) if (v := by_steps.get(str(steps))) else None for steps in tried]
             for arm, by_steps in record["scores"].items()}
    return tried, means


def selection_markdown(record: dict) -> list[str]:
    """One K's held-out scores (mean % per arm and candidate) with each arm's choice in bold."""
    tried, means = held_out_means(record)
    lines = [f"| held-out, {record['seeds']} seeds | " + " | ".join(f"{n} steps" for n in tried) + " |",
             "| --- |" + " --: |" * len(tried)]
    for arm, row in means.items():
        cells = []
        for steps, mean in zip(tried, row):
            text = "" if mean is None else "n/a" if math.isnan(mean) else f"{100 * mean:.2f}"
            cells.append(f"**{text}**" if mean is not None and record["chosen"][arm] == steps else text)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines
