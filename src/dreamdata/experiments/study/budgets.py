"""A study's budgets per K, resolved before anything runs: from a rule stated in advance, or from explicit lists.

Pre-registration: a gain that holds only at the budget it was tuned on is not yet a result, so a study fixes
its budgets by rules that depend on the config and the size of the real data only, never on results:

* ``classifier_epochs: E`` - every arm's classifier trains for
  ``max(classifier_min_steps, ceil(E * n / batch_size))`` optimiser steps, ``n`` the real images of the K
  (the real-only arm's training set). The epochs are counted on the real images, not on each arm's own set,
  so every arm of a K gets the same number of steps of the same batch (the study's fairness: arms differ in
  which images they see, not in how long they train). The floor keeps a small K from a handful of steps
  (10 epochs of K = 50 x 10 classes are 40 steps of 128).
* ``dream.per_class_multiple: M`` - ``min(dream.per_class_max, ceil(M * c))`` images dreamed per class, ``c``
  the real images per class: K, or for K = all the real set's largest class. The cap keeps K = all
  affordable (2 x 6,000 per class would be a day of dreaming on one CPU thread).

The resolved study is the same config with explicit lists and the rule keys null (:func:`explicit_form`). That
is what ``study.yaml`` stores and what a resumed study is compared with, and the classifier and dream stages
hash the resolved numbers: a rule that resolves to an older explicit list's numbers is the same study and
reuses its results. How each number was found is kept beside it (:func:`resolve_budgets`'s record, written to
``budgets.json`` and the study's summary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from dreamdata.data.image_data import ImageData
from dreamdata.experiments.study.config import (ClassifierSelectionConfig, StudyConfig, autoguide_step, k_label,
                                                uses_rule)

BUDGETS = "budgets.json"
CLASSIFIER_RULE = "max(classifier_min_steps, ceil(classifier_epochs x real images / batch_size))"
DREAM_RULE = "min(dream.per_class_max, ceil(dream.per_class_multiple x real images per class))"


@dataclass(frozen=True)
class RealCount:
    """What the rules read from one K's real set."""

    images: int  # the real-only arm's training set
    per_class: int  # its largest class: K, or for K = all the real set's own count

    @classmethod
    def of(cls, data: ImageData) -> "RealCount":
        return cls(len(data), int(data.class_counts().max()) if len(data) else 0)


def exact_ceil(multiple: float, count: int, divisor: int = 1) -> int:
    """``ceil(multiple * count / divisor)`` in exact arithmetic on the decimal the config wrote (0.1 is 1/10)."""
    return math.ceil(Fraction(repr(float(multiple))) * count / divisor)


def rule_classifier_steps(config: StudyConfig, count: RealCount) -> int:
    steps = exact_ceil(config.classifier_epochs, count.images, config.augment.classifier.batch_size)
    return max(steps, config.classifier_min_steps or 1)


def rule_dream_per_class(config: StudyConfig, count: RealCount) -> int:
    wanted = max(1, exact_ceil(config.dream.per_class_multiple, count.per_class))
    return min(wanted, config.dream.per_class_max) if config.dream.per_class_max is not None else wanted


def candidate_steps(base: int, multiples: list[float]) -> list[int]:
    """The classifier budgets a held-out selection tries (``classifier_selection``): ``ceil(m x base)`` for each
    multiple, ascending, without repeats."""
    return sorted({max(1, exact_ceil(multiple, base)) for multiple in multiples})


def explicit_form(config: StudyConfig) -> StudyConfig:
    """``config`` with its budgets as lists only: the rule keys and their companions null (how a study whose
    lists are given is stored and compared, whatever the defaults of the rule keys). A held-out selection that
    is off (``classifier_selection.multiples`` null) is stored with its other keys at their defaults: they
    change nothing then, so a study written before the selection existed is the same study."""
    selection = config.classifier_selection
    if selection.multiples is None:
        selection = ClassifierSelectionConfig()
    return replace(config, classifier_epochs=None, classifier_min_steps=None, classifier_selection=selection,
                   dream=replace(config.dream, per_class_multiple=None, per_class_max=None))


def _number(value: float) -> str:
    return f"{value:g}"


def describe_rules(config: StudyConfig) -> list[str]:
    """One line per budget saying how it is found (for the summary and the stored config's header)."""
    c, d = config, config.dream
    base = ("the list classifier_steps" if c.classifier_epochs is None else
            f"max({c.classifier_min_steps or 1}, ceil({_number(c.classifier_epochs)} epochs x real images / batch "
            f"{c.augment.classifier.batch_size}))")
    selection = c.classifier_selection
    if selection.multiples is None:
        classifier = (f"classifier steps (every arm alike): {base}" if c.classifier_epochs is None else
                      f"classifier steps (every arm alike) = {base}")
    else:
        classifier = (f"classifier steps per arm: {', '.join(_number(m) for m in selection.multiples)} x [{base}], "
                      f"chosen on {selection.heldout_per_class} held-out training images per class ({selection.seeds} "
                      f"seeds; the highest mean, a tie to fewer steps"
                      + (f"; an arm best at its largest candidate doubles it while that holds, up to "
                         f"{_number(selection.max_multiple)} x" if selection.max_multiple is not None else "") + ")")
    cap = f"min({d.per_class_max}, " if d.per_class_max is not None else "("
    dream = (f"dreamed per class = {cap}ceil({_number(d.per_class_multiple)} x real images per class))"
             if d.per_class_multiple is not None else "dreamed per class: the list dream.per_class")
    unit = "steps" if c.generator.steps is not None else "minutes"
    lines = [classifier, dream, f"generator: the list generator.{unit}"]
    if c.distill.from_steps is not None:
        lines.append(f"dreamed by a {d.steps}-step DDIM student progressively distilled from the generator's "
                     f"{c.distill.from_steps}-step DDIM ({c.distill.steps_per_round} updates per halving, guidance "
                     f"w = {_number(d.guidance)} baked in)")
    if d.autoguide_step is not None and any(step is not None for step in d.autoguide_step):
        guides = ", ".join(f"K = {k_label(k)} " + ("unguided" if step is None else f"step {step}")
                           for k, step in zip(c.real.per_class, d.autoguide_step))
        lines.append(f"dreamed autoguided (w = {_number(d.autoguide_weight)}) by each generator's own EMA at an "
                     f"earlier step: {guides}")
    return lines


def resolve_budgets(config: StudyConfig, counts: list[RealCount] | None) -> tuple[StudyConfig, dict]:
    """``(resolved config, record)``: the config with every budget an explicit list, and per K the numbers and
    how each was found. ``counts`` (one per K, in ``real.per_class`` order) may be None when no rule is used."""
    if uses_rule(config) and counts is None:
        raise ValueError("resolving a budget rule needs the real set's counts of every K")
    c, d = config, config.dream
    steps = c.classifier_steps if c.classifier_steps is not None else [rule_classifier_steps(c, n) for n in counts]
    dreamed = d.per_class if d.per_class is not None else [rule_dream_per_class(c, n) for n in counts]
    resolved = explicit_form(replace(c, classifier_steps=list(steps), dream=replace(d, per_class=list(dreamed))))
    per_k = {}
    for index, k in enumerate(c.real.per_class):
        count = counts[index] if counts is not None else None
        entry = {"real_images": count.images if count else None, "real_per_class": count.per_class if count else None,
                 "classifier_steps": steps[index], "dream_per_class": dreamed[index]}
        if c.classifier_steps is None:
            raw = exact_ceil(c.classifier_epochs, count.images, c.augment.classifier.batch_size)
            entry["classifier_steps_from"] = (f"max({c.classifier_min_steps or 1}, ceil({_number(c.classifier_epochs)} "
                                              f"x {count.images} / {c.augment.classifier.batch_size}) = {raw})")
        else:
            entry["classifier_steps_from"] = f"classifier_steps[{index}]"
        if d.per_class is None:
            raw = exact_ceil(d.per_class_multiple, count.per_class)
            cap = f"min({d.per_class_max}, " if d.per_class_max is not None else "("
            entry["dream_per_class_from"] = f"{cap}ceil({_number(d.per_class_multiple)} x {count.per_class}) = {raw})"
        else:
            entry["dream_per_class_from"] = f"dream.per_class[{index}]"
        selection = c.classifier_selection
        if selection.multiples is not None:
            entry["classifier_steps_candidates"] = candidate_steps(steps[index], selection.multiples)
            if selection.max_multiple is not None:
                entry["classifier_steps_max"] = max(1, exact_ceil(selection.max_multiple, steps[index]))
        unit, amount = c.generator.budget(index)
        entry["generator"] = f"{amount:g} {unit}"
        entry["autoguide_step"] = autoguide_step(c, index)
        per_k[k_label(k)] = entry
    record = {
        "classifier_steps": ({"rule": CLASSIFIER_RULE, "classifier_epochs": c.classifier_epochs,
                              "classifier_min_steps": c.classifier_min_steps,
                              "batch_size": c.augment.classifier.batch_size}
                             if c.classifier_steps is None else {"rule": "explicit list classifier_steps"}),
        "dream_per_class": ({"rule": DREAM_RULE, "per_class_multiple": d.per_class_multiple,
                             "per_class_max": d.per_class_max}
                            if d.per_class is None else {"rule": "explicit list dream.per_class"}),
        "generator": {"rule": f"explicit list generator.{'steps' if c.generator.steps is not None else 'minutes'}"},
        "described": describe_rules(c),
        "per_k": per_k,
    }
    return resolved, record


def resolved_yaml(resolved: StudyConfig, record: dict) -> str:
    """The resolved config as YAML (``study.yaml``), headed by comments saying how its budgets were found."""
    lines = ["# The resolved study config: budgets per K found by", *(f"#   {line}" for line in record["described"])]
    for k, entry in record["per_k"].items():
        candidates = entry.get("classifier_steps_candidates")
        top = f", doubled up to {entry['classifier_steps_max']}" if entry.get("classifier_steps_max") else ""
        steps = (f"classifier steps per arm among {candidates}{top} (held-out choice)" if candidates else
                 f"{entry['classifier_steps']} classifier steps")
        lines.append(f"#   K = {k}: {steps} "
                     f"({entry['classifier_steps_from']}), {entry['dream_per_class']} dreamed per class "
                     f"({entry['dream_per_class_from']}), generator {entry['generator']}"
                     + (f", autoguided by its step-{entry['autoguide_step']} EMA" if entry["autoguide_step"] else ""))
    return "\n".join(lines) + "\n" + resolved.to_yaml()
