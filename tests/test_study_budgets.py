"""A study's budgets by a rule stated in advance (issue #19): hand-computed numbers, both/neither refused,
explicit lists unchanged (older configs and their results stay valid), and a tiny study run by the rule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_pattern_images

from dreamdata.cli import main
from dreamdata.config import read_config_file
from dreamdata.data.image_data import ImageData
from dreamdata.errors import ConfigError
from dreamdata.experiments.study.budgets import RealCount, explicit_form, resolve_budgets
from dreamdata.experiments.study.config import StudyConfig, load_study_config, study_from_tree

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATA = Path(__file__).resolve().parent / "data"
# the demo preset's UNet until session 14, pinned by configs/study-fmnist.yaml
FORMER_DEMO_UNET = ["model.base_channels=32", "model.channel_mults=[1, 2, 2]", "model.num_res_blocks=1"]
# Fashion-MNIST's training split: 10 classes of 6,000; K = 50 and 500 take K of each
FMNIST = {50: RealCount(500, 50), 500: RealCount(5000, 500), None: RealCount(60000, 6000)}


def resolved(config: StudyConfig, counts: dict) -> StudyConfig:
    return resolve_budgets(config, [counts[k] for k in config.real.per_class])[0]


def test_the_rule_resolves_to_hand_computed_numbers():
    """classifier: max(1000, ceil(10 x n / 128)); dream: min(1000, ceil(2 x per class)), per K."""
    config = load_study_config(str(CONFIGS / "study-fmnist.yaml"))
    assert (config.classifier_steps, config.dream.per_class) == (None, None)  # rules, resolved with the data
    study, record = resolve_budgets(config, list(FMNIST.values()))
    # K = 50: 10 x 500 / 128 = 39.06 -> 40, floored to 1,000; K = 500: 3,906.25 / 10 -> 391 -> 1,000;
    # K = all: 10 x 60,000 / 128 = 4,687.5 -> 4,688. Dream: 2 x 50 = 100; 2 x 500 = 1,000; 2 x 6,000 capped
    assert study.classifier_steps == [1000, 1000, 4688]
    assert study.dream.per_class == [100, 1000, 1000]
    assert (study.classifier_epochs, study.dream.per_class_multiple) == (None, None)  # stored as lists
    assert record["per_k"]["all"]["classifier_steps_from"] == "max(1000, ceil(10 x 60000 / 128) = 4688)"
    assert record["per_k"]["all"]["dream_per_class_from"] == "min(1000, ceil(2 x 6000) = 12000)"
    assert record["per_k"]["50"]["real_images"] == 500 and record["per_k"]["all"]["real_per_class"] == 6000
    # without the floor and the cap, and with epochs a decimal: exact arithmetic on what the config wrote
    free = load_study_config(str(CONFIGS / "study-fmnist.yaml"),
                             ["classifier_min_steps=null", "dream.per_class_max=null", "classifier_epochs=0.1",
                              "dream.per_class_multiple=0.3"])
    counts = {50: RealCount(1280, 128), 500: RealCount(5000, 500), None: RealCount(60000, 6000)}
    study = resolved(free, counts)
    assert study.classifier_steps == [1, 4, 47]  # 0.1 x 1280 / 128 is exactly 1, not 1.0000000000000002 -> 2
    assert study.dream.per_class == [39, 150, 1800]  # ceil(38.4), 150, 1800


def test_k_all_counts_the_real_sets_largest_class():
    """For K = all the per-class count is the real set's own (here uneven classes: the largest, 7)."""
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    data = ImageData(torch.zeros(15, 1, 4, 4, dtype=torch.uint8), labels, ["a", "b", "c"], "test")
    assert RealCount.of(data) == RealCount(15, 7)
    config = load_study_config(str(CONFIGS / "study-fmnist.yaml"),
                               ["real.per_class=[null]", "generator.steps=[1]", "dream.per_class_max=10",
                                "augment.classifier.batch_size=4", "classifier_min_steps=1"])
    study = resolve_budgets(config, [RealCount.of(data)])[0]
    assert study.dream.per_class == [10]  # min(10, 2 x 7)
    assert study.classifier_steps == [38]  # ceil(10 x 15 / 4) = ceil(37.5)


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, overrides, needles", [
    ("classifier_steps: [1]\nclassifier_epochs: 3\n", [], ["classifier_steps and classifier_epochs", "study.yaml"]),
    ("dream: {per_class: [1], per_class_multiple: 2}\n", [], ["dream.per_class and dream.per_class_multiple"]),
    ("name: s\n", ["classifier_steps=[1]", "classifier_epochs=2"],
     ["classifier_steps and classifier_epochs", "in the overrides"]),
    ("name: s\n", ["classifier_epochs=null"], ["classifier_steps and classifier_epochs: give one of them"]),
    ("dream: {per_class_multiple: null}\n", [], ["dream.per_class and dream.per_class_multiple: give one"]),
    ("classifier_steps: [1]\n", ["classifier_steps=null"], ["classifier_steps and classifier_epochs"]),
])
def test_both_or_neither_is_refused(tmp_path, text, overrides, needles):
    with pytest.raises(ConfigError) as error:
        load_study_config(_write(tmp_path, text), overrides)
    message = str(error.value)
    assert "\n" not in message and all(needle in message for needle in needles), message


def test_both_or_neither_through_the_cli(tmp_path, capsys):
    path = _write(tmp_path, "name: s\nclassifier_steps: [1]\nclassifier_epochs: 3\n")
    assert main(["study", path, "--dry-run"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "classifier_steps and classifier_epochs" in error
    with pytest.raises(ConfigError, match="classifier_epochs"):
        from dreamdata.experiments.study.config import validate_study

        validate_study(StudyConfig(classifier_steps=[1, 2, 3]))  # the default rule is still set: both


def test_a_list_given_in_a_later_layer_replaces_the_rule(tmp_path):
    """A file's rule is replaced by a list on the command line, and the other way round; the defaults are
    the rule, replaced by a list in the file."""
    config = load_study_config(str(CONFIGS / "study-fmnist.yaml"), ["classifier_steps=[1, 2, 3]"])
    assert (config.classifier_steps, config.classifier_epochs, config.dream.per_class_multiple) == ([1, 2, 3], None, 2)
    listed = load_study_config(_write(tmp_path, "classifier_steps: [5, 6, 7]\ndream: {per_class: [1, 2, 3]}\n"))
    assert (listed.classifier_epochs, listed.dream.per_class_multiple) == (None, None)
    back = load_study_config(str(tmp_path / "study.yaml"), ["classifier_epochs=4", "dream.per_class_multiple=1"])
    assert (back.classifier_steps, back.classifier_epochs, back.dream.per_class) == (None, 4, None)
    defaults = load_study_config(_write(tmp_path, "name: s\n"))
    assert (defaults.classifier_epochs, defaults.classifier_min_steps) == (10, 1000)
    assert (defaults.dream.per_class_multiple, defaults.dream.per_class_max) == (2, 1000)


def test_explicit_lists_resolve_exactly_as_before():
    """The config BENCHMARKS measured (lists) resolves to its own lists without touching data, and its
    stored form is what an older dreamdata wrote, so its study directory still resumes."""
    measured = load_study_config(str(DATA / "study-fmnist-as-measured.yaml"))
    study, record = resolve_budgets(measured, None)
    assert study.classifier_steps == [4800, 1200, 1200] and study.dream.per_class == [600, 300, 300]
    assert study == explicit_form(measured)
    assert record["per_k"]["50"]["classifier_steps_from"] == "classifier_steps[0]"
    # study.yaml as the older code wrote it: every key of that StudyConfig, no rule keys
    older = read_config_file(str(DATA / "study-fmnist-as-measured.yaml"))
    assert explicit_form(study_from_tree(older)) == study


@pytest.mark.parametrize("config, measured, overrides", [
    ("study-fmnist.yaml", "study-fmnist-as-measured.yaml",  # the header's tuned overrides
     ["classifier_steps=[4800, 1200, 1200]", "dream.per_class=[600, 300, 300]", "dream.precision=fp32",
      "dream.sampler=ddim", "dream.guidance=1.5", "dream.steps=25", "generator.steps=[2000, 2000, 2000]"]),
    ("study-fmnist.yaml", "study-fmnist-as-measured.yaml",  # BENCHMARKS.md's K = 500 command
     ["real.per_class=[500]", "generator.steps=[2000]", "dream.per_class=[300]", "classifier_steps=[1200]",
      "name=study-fmnist-K500", "runs_dir=bench-results", "num_threads=1", "dream.precision=fp32",
      "dream.sampler=ddim", "dream.guidance=1.5", "dream.steps=25"]),
    ("study-fmnist.yaml", "study-fmnist-as-measured.yaml",  # the GAN header's diffusion arm
     ["name=study-fmnist-k50-810", "real.per_class=[50]", "generator.steps=[810]", "dream.per_class=[300]",
      "classifier_steps=[1200]", "augment.arms=[real, real+synthetic]", "dream.precision=fp32",
      "dream.sampler=ddim", "dream.guidance=1.5", "dream.steps=25"]),
    ("study-fmnist-gan.yaml", "study-fmnist-gan-as-measured.yaml",  # the GAN header's measured overrides
     ["classifier_steps=[1200]", "dream.per_class=[300]"]),
])
def test_the_measured_budgets_stay_reachable(config, measured, overrides):
    """The shipped rule configs with the overrides their headers and BENCHMARKS.md give are the studies that
    were measured: the same resolved config. The diffusion study's measured runs trained the `demo` preset's
    UNet of the time (base 32, 1-2-2, 1 block), which the shipped config now pins in generator.overrides since
    the demo preset has another network (session 14); the measured config gains exactly those three
    overrides, and tests/test_config.py checks that they build the 1,114,209-parameter network those runs
    logged."""
    # every measured study trained every arm for the same steps: classifier_selection off (since session 24 on)
    new = resolve_budgets(load_study_config(str(CONFIGS / config), [*overrides, "classifier_selection.multiples=null"]),
                          None)[0]
    old = explicit_form(load_study_config(str(DATA / measured), overrides))
    if old.generator.config == "demo":
        old = replace(old, generator=replace(old.generator, overrides=[*old.generator.overrides, *FORMER_DEMO_UNET]))
    assert new == old


@pytest.mark.parametrize("name, counts, steps, dreamed", [
    ("study-fmnist.yaml", FMNIST, [1000, 1000, 4688], [100, 1000, 1000]),
    ("study-fmnist-gan.yaml", FMNIST, [1000], [100]),
    ("study-cifar10.yaml", {None: RealCount(50000, 5000)}, [1000], [5000]),
])
def test_shipped_configs_resolve_to_the_numbers_in_their_headers(name, counts, steps, dreamed):
    config = load_study_config(str(CONFIGS / name))
    study = resolved(config, counts)
    assert (study.classifier_steps, study.dream.per_class) == (steps, dreamed)
    header = (CONFIGS / name).read_text()
    for number in {*steps, *dreamed}:
        assert f"{number:,}" in header, number


def write_rule_study(tmp_path, budgets: str) -> Path:
    """A two-K (4 per class, all 16 per class) study over the `tiny` preset with the budget lines given."""
    images, labels = make_pattern_images(per_class=16)
    np.savez(tmp_path / "tiny.npz", images=images, labels=labels, class_names=np.array(["h", "v", "s"]))
    path = tmp_path / "study.yaml"
    path.write_text(f"""
name: rule-study
runs_dir: {tmp_path / 'runs'}
device: cpu
real: {{dataset: "npz:{tmp_path / 'tiny.npz'}", per_class: [4, null]}}
generator:
  config: tiny
  overrides: [train.checkpoint_every=0, train.sample_grid=false, data.image_size=null]
  steps: [2, 2]
augment: {{seeds: 1, classifier: {{batch_size: 8}}}}
{budgets}
""")
    return path


def assert_refused_by_key(path: Path, accepted: list[str], refused: list[str], needles: list[str]) -> None:
    """The study at ``path`` loads with the ``accepted`` overrides, and with ``refused`` added fails with a
    one-line ConfigError that contains every needle."""
    load_study_config(str(path), accepted)
    with pytest.raises(ConfigError) as error:
        load_study_config(str(path), accepted + refused)
    message = str(error.value)
    assert "\n" not in message and all(needle in message for needle in needles), message


RULE = """classifier_epochs: 2
classifier_min_steps: 3
dream: {per_class_multiple: 0.5, per_class_max: 5, steps: 2, batch: 8, chunk: 8}"""


@pytest.mark.slow
def test_a_tiny_study_runs_by_the_rule_and_writes_its_budgets(tmp_path, capsys):
    """K = 4 (12 real images): max(3, ceil(2 x 12 / 8) = 3) = 3 steps, ceil(0.5 x 4) = 2 dreamed per class;
    K = all (48, 16 per class): ceil(2 x 48 / 8) = 12 steps, min(5, ceil(0.5 x 16) = 8) = 5 per class."""
    config = write_rule_study(tmp_path, RULE)
    assert main(["study", str(config), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "K = all: 12 classifier steps (max(3, ceil(2 x 48 / 8) = 12))" in printed
    assert yaml.safe_load(printed)["classifier_steps"] == [3, 12]
    assert main(["study", str(config)]) == 0
    study = tmp_path / "runs" / "rule-study"
    budgets = json.loads((study / "budgets.json").read_text())
    assert [(e["classifier_steps"], e["dream_per_class"]) for e in budgets["per_k"].values()] == [(3, 2), (12, 5)]
    assert budgets["classifier_steps"]["classifier_epochs"] == 2 and budgets["dream_per_class"]["per_class_max"] == 5
    summary = json.loads((study / "summary.json").read_text())
    assert summary["budgets"] == budgets
    assert summary["per_k"]["all"]["budget"]["dream_per_class_from"] == "min(5, ceil(0.5 x 16) = 8)"
    assert summary["per_k"]["all"]["synthetic_images"] == 15 and summary["per_k"]["4"]["synthetic_images"] == 6
    markdown = (study / "summary.md").read_text()
    assert "max(3, ceil(2 epochs x real images / batch 8))" in markdown
    assert "| all | 48 | 12 = max(3, ceil(2 x 48 / 8) = 12) | 5 = min(5, ceil(0.5 x 16) = 8) | 2 steps |" in markdown
    stored = (study / "study.yaml").read_text()
    assert stored.startswith("# The resolved study config") and "K = 4: 3 classifier steps" in stored
    assert yaml.safe_load(stored)["classifier_steps"] == [3, 12]
    for label, steps in (("4", 3), ("all", 12)):  # what the classifiers were trained for
        augment = json.loads((study / f"K{label}" / "augment" / "summary.json").read_text())
        assert augment["config"]["classifier"]["steps"] == steps
    results = (study / "Kall" / "augment" / "results.jsonl").read_text()
    from dreamdata.reports.html import write_report

    assert "Budgets, fixed before anything ran" in write_report(study).read_text()
    # the same numbers as explicit lists are the same study: it resumes, nothing is trained again
    lists = ["classifier_steps=[3, 12]", "dream.per_class=[2, 5]"]
    assert main(["study", str(config), *lists]) == 0
    assert (study / "Kall" / "augment" / "results.jsonl").read_text() == results
    assert "the list classifier_steps" in (study / "summary.md").read_text()
    # a study.yaml as an older dreamdata wrote it (no rule keys) resumes under the rule that gives its numbers
    tree = yaml.safe_load((study / "study.yaml").read_text())
    for key in ("classifier_epochs", "classifier_min_steps"):
        del tree[key]
    del tree["dream"]["per_class_multiple"], tree["dream"]["per_class_max"]
    (study / "study.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    assert main(["study", str(config)]) == 0
    assert (study / "Kall" / "augment" / "results.jsonl").read_text() == results
    # a rule that resolves to other numbers is another study
    assert main(["study", str(config), "classifier_epochs=3"]) == 2
