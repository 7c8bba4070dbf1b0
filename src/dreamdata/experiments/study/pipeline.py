"""A whole study in one call: for each K, train the generative model on K real images per class, dream, augment.

Layout of the study directory (``runs_dir/name``)::

    study.yaml                 the resolved StudyConfig (budgets as lists; its header says how they were found)
    budgets.json               each K's budgets and the rule or list each came from, written before anything runs
    K50/generator/             a `dreamdata train` run on the K = 50 real images per class
    K50/distilled/             (only with distill.from_steps) a `dreamdata distill` run of it: the few-step
                               student the study then dreams with
    K50/synthetic/             a `dreamdata dream` dataset from it (manifest.json, <class>/, dataset.npz)
    K50/filter-classifier.safetensors   (only with dream.keep_top)
    K50/selection/             (only with classifier_selection.multiples) each candidate budget's runs on
                               held-out training images (steps-<n>/) and each arm's choice (choice.json)
    K50/augment/               the `dreamdata augment` study (results.jsonl, summary.*, confusion-*.png)
    K50/timings.json
    summary.md, summary.json, accuracy-vs-k.png   across all K

Every stage resumes: the generator run continues from its latest checkpoint, the distillation from its
latest checkpoint, dreaming from its chunks,
augmenting from ``results.jsonl``. A stage that is complete is skipped, so re-running the command after
an interruption finishes the study. Re-running with a different config into the same directory is an
error (pass another ``name``); configs are compared with their budgets resolved, so a rule that gives the
numbers an older explicit list gave is the same study.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from dreamdata.atomic import write_text_atomic
from dreamdata.config import DataConfig, RunConfig, load_config, load_yaml
from dreamdata.data import describe_hflip, load_dataset, resolve_hflip
from dreamdata.errors import ConfigError, DreamdataError
from dreamdata.data.image_data import ImageData
from dreamdata.experiments.study.budgets import BUDGETS, RealCount, explicit_form, resolve_budgets, resolved_yaml
from dreamdata.experiments.study.config import StudyConfig, autoguide_step, k_label, study_from_tree, uses_rule

GENERATOR_DONE = "study-stage-complete.json"
# what the summary says of how each K's images were dreamed (keys of the dream manifest's spec)
DREAM_SETTINGS = ("sampler", "steps", "spacing", "guidance", "guidance_interval", "precision", "seed",
                  "autoguide_weight")


def generator_run_config(config: StudyConfig, index: int) -> RunConfig:
    """The run config of the ``index``-th K's generator: the study's preset and overrides, trained on the K
    real images per class the classifiers see, for the study's budget."""
    k = config.real.per_class[index]
    unit, amount = config.generator.budget(index)
    budget = [f"train.steps={amount}", "train.minutes=null"] if unit == "steps" else [
        "train.steps=null", f"train.minutes={amount}"]
    overrides = [*config.generator.overrides, f"data.dataset={config.real.dataset}",
                 f"data.data_root={config.real.data_root}", f"data.per_class={'null' if k is None else k}",
                 f"data.split_seed={config.real.split_seed}", *budget, "train.epochs=null",
                 f"train.device={config.device}",
                 f"train.num_threads={config.num_threads or 'null'}",
                 "train.progress=false", f"name=generator-K{k_label(k)}"]
    guide_step = autoguide_step(config, index)
    if guide_step is not None:  # the checkpoint the dream is autoguided by outlives the rotation
        overrides.append(f"train.keep_steps=[{guide_step}]")
    return load_config(config.generator.config, overrides)


def _train_generator(config: StudyConfig, index: int, run_dir: Path, log: Callable[[str], None]) -> None:
    from dreamdata.experiments.training_stage import train_stage

    k = config.real.per_class[index]
    unit, amount = config.generator.budget(index)
    description = (f"study K={k_label(k)}: training the generative model for {amount:g} "
                   f"{'min' if unit == 'minutes' else 'steps'}")
    if not train_stage(generator_run_config(config, index), run_dir, GENERATOR_DONE, log, description):
        raise DreamdataError(f"{run_dir}: another process is training this generator (its lock "
                          f"{run_dir.name}.training.lock is held); wait for it, or stop it")


def _distill(config: StudyConfig, index: int, generator_dir: Path, out_dir: Path,
             log: Callable[[str], None]) -> None:
    """Progressively distil the K's generator into the ``dream.steps``-step student the study dreams with
    (continuing a distillation already in ``out_dir``; a finished one is only checked)."""
    from dreamdata.distill.plan import DistillOptions
    from dreamdata.distill.run import distill_run

    s, d = config.distill, config.dream
    log(f"study K={k_label(config.real.per_class[index])}: distilling the generator's {s.from_steps}-step DDIM "
        f"into {d.steps} steps ({s.steps_per_round} updates per halving, guidance w = {d.guidance:g} baked in)")
    options = DistillOptions(from_steps=s.from_steps, to_steps=d.steps, steps_per_round=s.steps_per_round,
                             guidance=d.guidance, seed=s.seed)
    result = distill_run(generator_dir, options, out=out_dir, device=config.device, progress=False)
    if not result.complete:
        raise DreamdataError(f"{out_dir}: the distillation stopped at update {result.step}; re-run to continue")


def _dream(config: StudyConfig, index: int, dreamer_dir: Path, out_dir: Path, device: torch.device,
           filter_path: Path | None) -> dict:
    """Dream the K's synthetic set with ``dreamer_dir``: the generator run, or its distilled student."""
    from dreamdata.dream.manifest import DreamSpec, file_sha256
    from dreamdata.dream.workers import parse_workers
    from dreamdata.dream.writer import dream_dataset
    from dreamdata.training.pretrained import load_trained

    from dreamdata.sampling.from_run import autoguide, distilled_sampling, is_gan

    d = config.dream
    model = load_trained(dreamer_dir, device=device)
    guide, guide_step = None, autoguide_step(config, index)
    if guide_step is not None:
        if is_gan(model.process):
            raise ConfigError(f"config key dream.autoguide_step: {dreamer_dir} is a GAN generator, which draws in "
                              "one pass: autoguidance guides a diffusion model's steps (set it to null)")
        model.network, guide = autoguide(model, guide_step, d.autoguide_weight,
                                         option="config key dream.autoguide_step")
    # a GAN generator (generator.config: gan) dreams in one pass: the diffusion sampler settings do not apply;
    # a distilled student (distill.from_steps) with the DDIM it was distilled for, its guidance baked in
    if is_gan(model.process):
        sampler, steps, spacing, guidance, interval = "gan", 1, "linspace", 0.0, None
    elif model.distilled is not None:
        sampler, steps, spacing = distilled_sampling(model.distilled, d.sampler, d.steps, None,
                                                     where=f"{dreamer_dir}: ")
        guidance, interval = 0.0, None
    else:
        sampler, steps, spacing = d.sampler, min(d.steps, model.process.num_steps), "linspace"
        guidance, interval = d.guidance, d.guidance_interval
    spec = DreamSpec(checkpoint_sha256=file_sha256(model.checkpoint), checkpoint=str(model.checkpoint),
                     step=model.step, weights="ema", class_names=list(model.class_names),
                     classes=list(range(len(model.class_names))), per_class=d.per_class[index], sampler=sampler,
                     steps=steps, spacing=spacing, guidance=guidance, guidance_interval=interval,
                     seed=d.seed, chunk=d.chunk, channels=int(model.network.in_channels),
                     image_size=int(model.network.image_size), keep_top=d.keep_top,
                     filter_classifier_sha256=file_sha256(filter_path) if filter_path else None,
                     precision=None if d.precision == "fp32" else d.precision,
                     autoguide_sha256=None if guide is None else file_sha256(guide.checkpoint),
                     autoguide_checkpoint=None if guide is None else str(guide.checkpoint),
                     autoguide_weight=None if guide is None else float(d.autoguide_weight))
    classifier = None
    if filter_path is not None:
        from dreamdata.classify.checkpoint import load_classifier

        classifier = load_classifier(filter_path, device=device)
    # the fast layout on a CPU: one process per thread of the study's budget (num_threads), see dream.workers
    dream_dataset(model, spec, out_dir, batch_size=d.batch, device=device, progress=False,
                  filter_classifier=classifier, workers=parse_workers(d.workers, "config key dream.workers"))
    return json.loads((out_dir / "manifest.json").read_text())


def _select_budgets(config: StudyConfig, index: int, synthetic: ImageData | None, augment_config, record: dict,
                    out_dir: Path, device: torch.device, log: Callable[[str], None]) -> dict:
    """Each arm's classifier steps for the ``index``-th K, chosen among the candidates resolved in ``record``
    on held-out training images (:mod:`~dreamdata.experiments.study.selection`)."""
    from dreamdata.experiments.study.selection import heldout_split, select_classifier_steps

    k = config.real.per_class[index]
    full = load_dataset(DataConfig(dataset=config.real.dataset, data_root=config.real.data_root), "train")
    split = heldout_split(full, k, config.real.split_seed, config.classifier_selection)
    budget = record["per_k"][k_label(k)]
    candidates, limit = budget["classifier_steps_candidates"], budget.get("classifier_steps_max")
    log(f"study K={k_label(k)}: choosing each arm's classifier steps among {candidates}"
        + (f" (doubling past them up to {limit})" if limit else "") + f" on {split.describe()}")
    return select_classifier_steps(split, synthetic, augment_config, candidates, config.classifier_selection,
                                   out_dir, device=device, log=log, limit=limit)


def _filter_classifier(config: StudyConfig, index: int, real, path: Path, device: torch.device) -> Path:
    from dreamdata.classify.checkpoint import save_classifier
    from dreamdata.classify.train import train_classifier

    if not path.is_file():
        classifier_config = replace(config.augment.classifier, steps=config.classifier_steps[index],
                                    hflip=study_hflip(config))
        network = train_classifier(real.images, real.labels, real.num_classes, classifier_config, seed=0,
                                   device=device, progress="filter classifier")
        save_classifier(path, network, classifier_config.network, real.channels, real.image_size, real.class_names)
    return path


def study_hflip(config: StudyConfig) -> bool:
    """The classifiers' horizontal flips: ``augment.classifier.hflip``, or when null the default of
    ``real.dataset`` (on for fashion-mnist and cifar, off for mnist and files). The generator follows its own
    ``data.hflip``, whose null is the same dataset default."""
    return resolve_hflip(config.augment.classifier.hflip, config.real.dataset)


def real_sets(config: StudyConfig) -> list[ImageData]:
    """The K real training images per class of every K (the generator and the classifiers see the same ones)."""
    return [load_dataset(DataConfig(dataset=config.real.dataset, data_root=config.real.data_root, per_class=k,
                                    split_seed=config.real.split_seed), "train") for k in config.real.per_class]


def resolve_study(config: StudyConfig, reals: list[ImageData] | None = None) -> tuple[StudyConfig, dict]:
    """The study with every budget resolved to a list, and the record of how (see
    :mod:`~dreamdata.experiments.study.budgets`); loads the real sets only when a rule needs them."""
    if reals is None and uses_rule(config):
        reals = real_sets(config)
    return resolve_budgets(config, [RealCount.of(real) for real in reals] if reals is not None else None)


def _check_config(study_dir: Path, config: StudyConfig, record: dict) -> None:
    """``config`` is resolved; the stored one (older ones gave lists) is compared with its budgets as lists."""
    stored = study_dir / "study.yaml"
    # compared as configs, not as text: a key added to StudyConfig since (at its default) is no difference
    stored_tree = (load_yaml(stored.read_text(), str(stored)) or {}) if stored.is_file() else None
    if stored_tree is not None and explicit_form(study_from_tree(stored_tree, f" in {stored}")) != config:
        raise ConfigError(f"{stored}: this study directory was made with a different config; to start another "
                          f"study give another name (name=...), or delete {study_dir}")
    write_text_atomic(stored, resolved_yaml(config, record))
    write_text_atomic(study_dir / BUDGETS, json.dumps(record, indent=2) + "\n")


def run_study(config: StudyConfig, study_dir: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Run (or finish) every K of the study and write the cross-K summary; returns it."""
    from dreamdata.dream.load import load_synthetic
    from dreamdata.dream.manifest import file_sha256
    from dreamdata.experiments.study.augment import run_augment
    from dreamdata.experiments.study.report import write_study_report
    from dreamdata.training import checkpoint as ckpt
    from dreamdata.training.setup import resolve_device

    study_dir = Path(study_dir or Path(config.runs_dir).expanduser() / config.name)
    # the budgets are fixed from the config and the real data before anything is trained
    reals = real_sets(config)
    config, record = resolve_study(config, reals)
    study_dir.mkdir(parents=True, exist_ok=True)
    _check_config(study_dir, config, record)
    for line in record["described"]:
        log(f"study: {line}")
    log("study: budgets per K: " + "; ".join(f"K={k} {entry['classifier_steps']} classifier steps, "
                                              f"{entry['dream_per_class']} dreamed per class"
                                              for k, entry in record["per_k"].items()))
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    test = load_dataset(DataConfig(dataset=config.real.test_dataset or config.real.dataset,
                                   data_root=config.real.data_root), "test")
    log(f"study: classifiers with horizontal flips "
        f"{describe_hflip(config.augment.classifier.hflip, config.real.dataset)}")
    per_k = {}
    for index, k in enumerate(config.real.per_class):
        k_dir = study_dir / f"K{k_label(k)}"
        timings: dict = {}
        real = reals[index]
        started = time.perf_counter()
        _train_generator(config, index, k_dir / "generator", log)
        timings["generator_s"] = round(time.perf_counter() - started, 1)
        dreamer = k_dir / "generator"
        if config.distill.from_steps is not None:
            started = time.perf_counter()
            dreamer = k_dir / "distilled"
            _distill(config, index, k_dir / "generator", dreamer, log)
            timings["distill_s"] = round(time.perf_counter() - started, 1)

        filter_path = None
        if config.dream.keep_top is not None:
            if not (k_dir / "filter-classifier.safetensors").is_file():
                log(f"study K={k_label(k)}: training the filter classifier on the {len(real)} real images "
                    f"({config.classifier_steps[index]} steps, seed 0) for dream.keep_top={config.dream.keep_top:g}")
            filter_path = _filter_classifier(config, index, real, k_dir / "filter-classifier.safetensors", device)
        started = time.perf_counter()
        log(f"study K={k_label(k)}: dreaming {config.dream.per_class[index]} images per class "
            f"({record['per_k'][k_label(k)]['dream_per_class_from']})")
        manifest = _dream(config, index, dreamer, k_dir / "synthetic", device, filter_path)
        dreaming = manifest.get("dreaming") or {}
        if dreaming.get("images"):
            log(f"study K={k_label(k)}: dreamed {dreaming['images']} images at {dreaming['images_per_second']:.2f} "
                f"images/s ({dreaming['layout']})")
        timings["dream_s"] = round(time.perf_counter() - started, 1)

        expected = file_sha256(ckpt.latest_checkpoint(dreamer))
        synthetic, _ = load_synthetic(k_dir / "synthetic", real, expected)
        augment_config = replace(config.augment, classifier=replace(
            config.augment.classifier, steps=config.classifier_steps[index], hflip=study_hflip(config)))
        selection = None
        if config.classifier_selection.multiples is not None:
            started = time.perf_counter()
            selection = _select_budgets(config, index, synthetic, augment_config, record, k_dir / "selection",
                                        device, log)
            timings["selection_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        summary = run_augment(real, test, synthetic, augment_config, k_dir / "augment", device=device, log=log,
                              arm_steps=selection["chosen"] if selection else None)
        timings["augment_s"] = round(time.perf_counter() - started, 1)
        write_text_atomic(k_dir / "timings.json", json.dumps(timings, indent=2) + "\n")
        spec = manifest.get("spec") or {}
        per_k[k_label(k)] = {"summary": summary, "real_per_class": k, "real_images": len(real),
                             "synthetic_images": len(synthetic), "dream_seconds": manifest.get("seconds"),
                             "dreaming": manifest.get("dreaming"),
                             "dreamed_with": {**{key: spec.get(key) for key in DREAM_SETTINGS},
                                              "autoguide_step": autoguide_step(config, index)},
                             "filter": manifest.get("filter"), "selection": selection,
                             "timings": timings}
    return write_study_report(study_dir, config, per_k, record)
