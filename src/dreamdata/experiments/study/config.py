"""The typed config of a whole synthetic-data study (``dreamdata study CONFIG``).

A study runs, for each K in ``real.per_class`` (real images per class; ``null`` = all): train the
generative model on those K real images per class for ``generator.steps[i]`` optimiser steps (or, when no
steps are given, ``generator.minutes[i]`` minutes of wall time), dream images per class with it, then
compare the arms with classifiers trained for the same number of optimiser steps. Lists indexed by ``i``
run parallel to ``real.per_class``.

The classifier steps and the dreamed count are each given one of two ways, never both:

* by a **rule stated in advance** (the default): ``classifier_epochs`` (steps from epochs of the K real
  images, at least ``classifier_min_steps``) and ``dream.per_class_multiple`` (dreamed per class as a
  multiple of the real per-class count, at most ``dream.per_class_max``), resolved per K from the real data
  before anything runs (:mod:`~dreamdata.experiments.study.budgets`);
* by **explicit lists**, one per K: ``classifier_steps`` and ``dream.per_class``.

Defaults here; YAML files (``configs/study-*.yaml``) override them; ``key=value`` arguments override those.
A layer that gives one key of a pair replaces the other from the layers below (``classifier_steps=[1200]``
on the command line replaces a file's ``classifier_epochs``); one layer giving both is an error.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import yaml

from dreamdata.config import build_dataclass, config_tree, merge_trees, parse_override, set_dotted
from dreamdata.errors import ConfigError
from dreamdata.precisions import SAMPLING_PRECISIONS, expected_sampling_precision
from dreamdata.experiments.study.augment import AugmentConfig


@dataclass
class StudyRealConfig:
    dataset: str = "fashion-mnist"
    data_root: str = "~/.cache/dreamdata/data"
    per_class: list[int | None] = field(default_factory=lambda: [50, 500, None])  # the K values
    split_seed: int = 0  # which K images; the generative model and the classifiers see the same ones
    test_dataset: str | None = None  # where the test split comes from; None = dataset's own test split


@dataclass
class StudyGeneratorConfig:
    config: str = "demo"  # preset or YAML for `dreamdata train`
    overrides: list[str] = field(default_factory=list)  # key=value overrides of it
    minutes: list[float] = field(default_factory=lambda: [4.0, 8.0, 12.0])  # training budget per K
    # Optimiser steps per K. When given they replace `minutes`: a step budget gives the same generator on
    # every machine, a minutes budget a machine-dependent one.
    steps: list[int] | None = None

    def budget(self, index: int) -> tuple[str, float]:
        """``("steps", n)`` or ``("minutes", m)``: the training budget of the ``index``-th K."""
        if self.steps is not None:
            return "steps", self.steps[index]
        return "minutes", self.minutes[index]


@dataclass
class StudyDreamConfig:
    per_class: list[int] | None = None  # images dreamed per class, one per K (replaces the rule below)
    # the rule: dreamed per class = ceil(multiple x real per class), at most per_class_max (None = no cap);
    # real per class is K, or for K = all the real set's largest class
    per_class_multiple: float | None = 2.0
    per_class_max: int | None = 1000  # used only with per_class_multiple
    sampler: str = "ddim"
    steps: int = 25
    guidance: float = 1.0
    # [sigma_lo, sigma_hi]: guide only at noise levels sigma_lo < sigma <= sigma_hi (Kynkäänniemi et al. 2024,
    # EDM's sigma = sqrt((1 - alpha_bar) / alpha_bar)); None = every step
    guidance_interval: list[float] | None = None
    seed: int = 0
    batch: int = 250
    chunk: int = 500
    keep_top: float | None = None  # filter by a classifier trained on the K real images (None = no filter)
    precision: str = "fp32"  # the network's arithmetic while dreaming: fp32, or bf16 autocast (`dream --precision`)
    # CPU worker processes sharing the chunks (`dream --workers`): auto = one per thread of the study's thread
    # budget (num_threads, else all cores), each with one thread; 1 = the study's process with all its threads
    workers: int | str = "auto"
    # Autoguidance (Karras et al. 2024, `dreamdata dream --autoguide`): each K's generator guided by its own EMA
    # at this training step, (1 + w) D(x) - w D_step(x), twice the network evaluations per image; one entry per
    # K (null = that K unguided), null = off. The generator then keeps that checkpoint (train.keep_steps).
    autoguide_step: list[int | None] | None = None
    autoguide_weight: float = 1.0  # w > 0


@dataclass
class StudyDistillConfig:
    """Progressive distillation of each K's generator before it dreams (``dreamdata distill``, issue #19 item 3).

    Off while ``from_steps`` is null. On, the generator's ``from_steps``-step DDIM is halved round by round down
    to ``dream.steps`` (so ``dream.sampler`` must be ``ddim`` and ``dream.steps`` ``from_steps`` halved one or
    more times), with ``dream.guidance`` baked into the student, and the study dreams with the student:
    ``K*/distilled/`` is its run directory. The distillation's batch, lr and checkpoint interval are the
    generator's (``dreamdata distill``'s defaults).
    """

    from_steps: int | None = None  # the teacher's DDIM steps, e.g. 64 (null = no distillation)
    steps_per_round: int = 1000  # student updates per halving
    seed: int = 0


@dataclass
class ClassifierSelectionConfig:
    """Each arm's classifier budget chosen on held-out *training* images (never the test set), per K.

    Off while ``multiples`` is null: every arm trains for the K's budget (``classifier_steps`` or the rule). On,
    the candidates are ``ceil(m x that budget)`` for each ``m`` in ``multiples``, fixed before anything runs;
    every arm is trained at every candidate with ``seeds`` seeds and scored on ``heldout_per_class`` real
    training images per class that the K's classifiers and generator never see, and each arm then trains
    on the test run at the candidate with its highest held-out mean accuracy (a tie to fewer steps). An arm
    whose best is its largest candidate has not levelled off: its budget keeps doubling while that stays so,
    up to ``max_multiple`` x the K's budget. See :mod:`~dreamdata.experiments.study.selection`.
    """

    multiples: list[float] | None = None  # e.g. [1, 2, 4]: candidates = 1x, 2x, 4x the K's classifier steps
    max_multiple: float | None = None  # doubling past the grid stops here (null = the grid only)
    heldout_per_class: int = 500  # real training images per class held out for scoring the candidates
    seeds: int = 3  # classifier seeds per candidate and arm
    seed: int = 1  # which images are held out (a seeded shuffle, as real.split_seed picks the K)


@dataclass
class StudyConfig:
    name: str = "study"
    runs_dir: str = "runs"
    device: str = "auto"
    num_threads: int | None = None  # torch CPU threads (1 can be faster on a CPU shared with other jobs)
    real: StudyRealConfig = field(default_factory=StudyRealConfig)
    generator: StudyGeneratorConfig = field(default_factory=StudyGeneratorConfig)
    dream: StudyDreamConfig = field(default_factory=StudyDreamConfig)
    distill: StudyDistillConfig = field(default_factory=StudyDistillConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Classifier optimiser steps per K, identical for every arm: an explicit list (one per K), or the rule
    # max(classifier_min_steps, ceil(classifier_epochs x real images / batch_size)), counted on the K real
    # images (the real-only arm's training set) so that every arm of a K gets the same number of steps
    classifier_steps: list[int] | None = None
    classifier_epochs: float | None = 10.0
    classifier_min_steps: int | None = 1000  # used only with classifier_epochs (None = no floor)
    # each arm's budget among multiples of the above, chosen on held-out training images (null = off)
    classifier_selection: ClassifierSelectionConfig = field(default_factory=ClassifierSelectionConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# (explicit list, rule): each budget is given by exactly one of the two
BUDGET_PAIRS = (("classifier_steps", "classifier_epochs"), ("dream.per_class", "dream.per_class_multiple"))


def uses_rule(config: StudyConfig) -> bool:
    """Whether a budget is given by a rule, so that resolving it needs the real data."""
    return config.classifier_epochs is not None or config.dream.per_class_multiple is not None


def _lookup(tree: dict, dotted: str) -> tuple[bool, object]:
    """``(present, value)`` of ``dotted`` in a raw config tree."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _given(tree: dict, dotted: str) -> bool:
    present, value = _lookup(tree, dotted)
    return present and value is not None


def _check_layer(tree: dict, where: str) -> None:
    for explicit, rule in BUDGET_PAIRS:
        if _given(tree, explicit) and _given(tree, rule):
            raise ConfigError(f"config keys {explicit} and {rule}{where}: give one of them, not both (set the "
                              "other to null)")


def _replace_partners(base: dict, update: dict) -> dict:
    """A copy of ``base`` where each budget key that ``update`` gives (and not its partner) nulls its partner:
    an explicit list given in a later layer replaces a rule from an earlier one, and the other way round."""
    base = copy.deepcopy(base)
    for pair in BUDGET_PAIRS:
        for key, partner in (pair, pair[::-1]):
            if _given(update, key) and not _lookup(update, partner)[0]:
                try:
                    set_dotted(base, partner, None)
                except ConfigError:
                    pass  # a section that is not a mapping: build_dataclass names it
    return base


def _field(config: StudyConfig, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def study_from_tree(tree: dict, where: str = "") -> StudyConfig:
    """The StudyConfig of one raw tree laid over the defaults (where the budgets are rules)."""
    _check_layer(tree, where)
    return build_dataclass(StudyConfig, merge_trees(_replace_partners({}, tree), tree), "")


def validate_study(config: StudyConfig) -> None:
    count = len(config.real.per_class)
    if count == 0:
        raise ConfigError("config key real.per_class: give at least one K (null = all images)")
    for explicit, rule in BUDGET_PAIRS:
        values = [_field(config, explicit), _field(config, rule)]
        if all(value is None for value in values):
            raise ConfigError(f"config keys {explicit} and {rule}: give one of them (a list per K, or the rule)")
        if all(value is not None for value in values):
            raise ConfigError(f"config keys {explicit} and {rule}: give one of them, not both (set the other to "
                              "null)")
    budget = ("generator.steps", config.generator.steps) if config.generator.steps is not None else (
        "generator.minutes", config.generator.minutes)
    lists = [(key, values) for key, values in (budget, ("dream.per_class", config.dream.per_class),
                                               ("classifier_steps", config.classifier_steps)) if values is not None]
    for key, values in lists:
        if len(values) != count:
            raise ConfigError(f"config key {key}: has {len(values)} entries, real.per_class has {count}; give one "
                              "per K")
        if any(value <= 0 for value in values):
            raise ConfigError(f"config key {key}: expected positive numbers, got {values}")
    ks = [k for k in config.real.per_class if k is not None]
    if any(k < 1 for k in ks) or len(set(config.real.per_class)) != count:
        raise ConfigError(f"config key real.per_class: expected distinct positive integers or null, got "
                          f"{config.real.per_class}")
    for key, value in (("classifier_epochs", config.classifier_epochs),
                       ("dream.per_class_multiple", config.dream.per_class_multiple)):
        if value is not None and not (0 < value < float("inf")):
            raise ConfigError(f"config key {key}: expected a positive number, got {value}")
    for key, value in (("classifier_min_steps", config.classifier_min_steps),
                       ("dream.per_class_max", config.dream.per_class_max)):
        if value is not None and value < 1:
            raise ConfigError(f"config key {key}: expected a positive integer or null, got {value}")
    if config.augment.seeds < 1:
        raise ConfigError(f"config key augment.seeds: expected a positive integer, got {config.augment.seeds}")
    if not config.dream.guidance >= 0:
        raise ConfigError(f"config key dream.guidance: expected a guidance scale w >= 0 (0 = no guidance), got "
                          f"{config.dream.guidance}")
    if config.dream.guidance_interval is not None:
        from dreamdata.sampling.guidance import check_guidance_interval

        try:
            check_guidance_interval(config.dream.guidance_interval, "config key dream.guidance_interval")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if config.dream.guidance == 0:
            raise ConfigError(f"config key dream.guidance_interval: {config.dream.guidance_interval} says at which "
                              "noise levels to guide, but dream.guidance is 0 (set it > 0, or the interval to null)")

    if config.dream.precision not in SAMPLING_PRECISIONS:
        raise ConfigError(f"config key dream.precision: expected {expected_sampling_precision()}, "
                          f"got {config.dream.precision!r}")
    _validate_distill(config)
    _validate_autoguide(config)
    _validate_selection(config.classifier_selection)

    from dreamdata.dream.workers import parse_workers

    parse_workers(config.dream.workers, "config key dream.workers")
    if config.dream.keep_top is not None and not 0 < config.dream.keep_top <= 1:
        raise ConfigError(f"config key dream.keep_top: expected 0 < fraction <= 1, got {config.dream.keep_top}")


def _validate_distill(config: StudyConfig) -> None:
    """With distillation on, the dream settings must be ones a progressively distilled student can sample."""
    distill, dream = config.distill, config.dream
    if distill.from_steps is None:
        return
    if distill.from_steps < 2:
        raise ConfigError(f"config key distill.from_steps: expected the teacher's DDIM steps, >= 2 (or null = no "
                          f"distillation), got {distill.from_steps}")
    if distill.steps_per_round < 1:
        raise ConfigError(f"config key distill.steps_per_round: expected a positive integer, got "
                          f"{distill.steps_per_round}")
    if dream.sampler != "ddim":
        raise ConfigError(f"config key dream.sampler: {dream.sampler!r}, but distill.from_steps is set: a distilled "
                          "student samples with the DDIM it was distilled for (set dream.sampler: ddim)")
    halvings = distill.from_steps / dream.steps
    if dream.steps >= distill.from_steps or halvings != 2 ** round(math.log2(halvings)):
        raise ConfigError(f"config key dream.steps: {dream.steps}, but distillation halves distill.from_steps = "
                          f"{distill.from_steps} round by round, so dream.steps must be {distill.from_steps} / 2, "
                          f"/ 4, ... (e.g. {max(1, distill.from_steps // 16)})")
    if dream.guidance_interval is not None:
        raise ConfigError(f"config key dream.guidance_interval: {dream.guidance_interval}, but distill.from_steps "
                          "is set: the student has dream.guidance baked in at every step (set the interval to null)")


def autoguide_step(config: StudyConfig, index: int) -> int | None:
    """The training step of the ``index``-th K's generator that autoguides its dream (``dream.autoguide_step``),
    or None."""
    steps = config.dream.autoguide_step
    return None if steps is None else steps[index]


def _validate_autoguide(config: StudyConfig) -> None:
    """``dream.autoguide_step``: one earlier step of each K's generator (or null), which that generator reaches."""
    steps, count = config.dream.autoguide_step, len(config.real.per_class)
    if steps is None:
        return
    if not isinstance(steps, list) or len(steps) != count:
        raise ConfigError(f"config key dream.autoguide_step: expected a list with one training step (or null) per "
                          f"K, {count} in all (real.per_class), got {steps}")
    for index, step in enumerate(steps):
        if step is None:
            continue
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ConfigError(f"config key dream.autoguide_step: expected positive training steps or null, got "
                              f"{step!r} in {steps}")
        budget = config.generator.steps
        if budget is not None and step >= budget[index]:
            raise ConfigError(f"config key dream.autoguide_step: {step} for K = {k_label(config.real.per_class[index])}"
                              f" is not before the generator's last step ({budget[index]}, generator.steps): the "
                              "guide is an earlier, weaker checkpoint of the same run")
    if not config.dream.autoguide_weight > 0:
        raise ConfigError(f"config key dream.autoguide_weight: expected a weight w > 0 (the guided output is "
                          f"(1 + w) D_model - w D_guide), got {config.dream.autoguide_weight}")
    if config.distill.from_steps is not None and any(step is not None for step in steps):
        raise ConfigError("config key dream.autoguide_step: set, but distill.from_steps is too: the study dreams "
                          "with the distilled student, which has no earlier self to be guided by (set one to null)")


def _validate_selection(selection: ClassifierSelectionConfig) -> None:
    multiples = selection.multiples
    if multiples is not None:
        if not multiples or any(isinstance(m, bool) or not 0 < m < float("inf") for m in multiples):
            raise ConfigError(f"config key classifier_selection.multiples: expected a list of positive numbers "
                              f"(e.g. [1, 2, 4]) or null (no selection), got {multiples}")
        if len(set(multiples)) != len(multiples):
            raise ConfigError(f"config key classifier_selection.multiples: {multiples} lists a multiple twice")
    top = selection.max_multiple
    if top is not None and (isinstance(top, bool) or not 0 < top < float("inf")):
        raise ConfigError(f"config key classifier_selection.max_multiple: expected a positive number or null (no "
                          f"doubling past classifier_selection.multiples), got {top}")
    for key in ("heldout_per_class", "seeds"):
        value = getattr(selection, key)
        if value < 1:
            raise ConfigError(f"config key classifier_selection.{key}: expected a positive integer, got {value}")


def load_study_config(path: str, overrides: list[str] = ()) -> StudyConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, checked (budgets as given: rules are resolved by
    :func:`~dreamdata.experiments.study.budgets.resolve_budgets` once the real data is loaded)."""
    file_tree = config_tree(path)
    _check_layer(file_tree, f" in {path}")
    _check_layer(config_tree(None, overrides), " in the overrides")
    # defaults (the rules) <- file <- overrides, each layer's budget keys replacing the pair partner below
    tree = _replace_partners(merge_trees(_replace_partners({}, file_tree), file_tree), config_tree(None, overrides))
    for text in overrides:
        set_dotted(tree, *parse_override(text))  # as config_tree applies them
    config = study_from_tree(tree)
    validate_study(config)
    return config


def k_label(k: int | None) -> str:
    return "all" if k is None else str(k)
