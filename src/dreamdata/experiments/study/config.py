"""The typed config of a whole synthetic-data study (``dreamdata study CONFIG``).

A study runs, for each K in ``real.per_class`` (real images per class; ``null`` = all): train the
generative model on those K real images per class for ``generator.steps[i]`` optimiser steps (or, when no
steps are given, ``generator.minutes[i]`` minutes of wall time), dream
``dream.per_class[i]`` images per class with it, then compare the arms with a classifier trained for
``classifier_steps[i]`` optimiser steps. Lists indexed by ``i`` run parallel to ``real.per_class``, so
each K gets budgets that suit it. Defaults here; YAML files (``configs/study-*.yaml``) override them;
``key=value`` arguments override those.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import yaml

from dreamdata.config import build_dataclass, config_tree
from dreamdata.errors import ConfigError
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
    per_class: list[int] = field(default_factory=lambda: [500, 500, 500])  # images dreamed per class, per K
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
    # CPU worker processes sharing the chunks (`dream --workers`): auto = one per thread of the study's thread
    # budget (num_threads, else all cores), each with one thread; 1 = the study's process with all its threads
    workers: int | str = "auto"


@dataclass
class StudyConfig:
    name: str = "study"
    runs_dir: str = "runs"
    device: str = "auto"
    num_threads: int | None = None  # torch CPU threads (1 can be faster on a CPU shared with other jobs)
    real: StudyRealConfig = field(default_factory=StudyRealConfig)
    generator: StudyGeneratorConfig = field(default_factory=StudyGeneratorConfig)
    dream: StudyDreamConfig = field(default_factory=StudyDreamConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    classifier_steps: list[int] = field(default_factory=lambda: [300, 600, 1000])  # per K; every arm alike

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def validate_study(config: StudyConfig) -> None:
    count = len(config.real.per_class)
    if count == 0:
        raise ConfigError("config key real.per_class: give at least one K (null = all images)")
    budget = ("generator.steps", config.generator.steps) if config.generator.steps is not None else (
        "generator.minutes", config.generator.minutes)
    for key, values in (budget, ("dream.per_class", config.dream.per_class),
                        ("classifier_steps", config.classifier_steps)):
        if len(values) != count:
            raise ConfigError(f"config key {key}: has {len(values)} entries, real.per_class has {count}; give one "
                              "per K")
        if any(value <= 0 for value in values):
            raise ConfigError(f"config key {key}: expected positive numbers, got {values}")
    ks = [k for k in config.real.per_class if k is not None]
    if any(k < 1 for k in ks) or len(set(config.real.per_class)) != count:
        raise ConfigError(f"config key real.per_class: expected distinct positive integers or null, got "
                          f"{config.real.per_class}")
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

    from dreamdata.dream.workers import parse_workers

    parse_workers(config.dream.workers, "config key dream.workers")
    if config.dream.keep_top is not None and not 0 < config.dream.keep_top <= 1:
        raise ConfigError(f"config key dream.keep_top: expected 0 < fraction <= 1, got {config.dream.keep_top}")


def load_study_config(path: str, overrides: list[str] = ()) -> StudyConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, checked."""
    config = build_dataclass(StudyConfig, config_tree(path, overrides), "")
    validate_study(config)
    return config


def k_label(k: int | None) -> str:
    return "all" if k is None else str(k)
