"""Each arm's classifier budget chosen on held-out training images (``classifier_selection``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml
from test_study_budgets import RULE, write_rule_study

from dreamdata.classify.train import ClassifierConfig
from dreamdata.cli import main
from dreamdata.data.image_data import ImageData
from dreamdata.errors import ConfigError
from dreamdata.experiments.study.augment import AugmentConfig, run_augment
from dreamdata.experiments.study.budgets import candidate_steps
from dreamdata.experiments.study.config import ClassifierSelectionConfig, load_study_config
from dreamdata.experiments.study.selection import choose_steps, heldout_split


def numbered_images(per_class: int = 16, classes: int = 3) -> ImageData:
    """Images whose first pixel is their own index, so each one can be told apart after any selection."""
    count = per_class * classes
    images = torch.zeros(count, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count, dtype=torch.uint8)
    labels = torch.arange(count) % classes
    return ImageData(images, labels, [f"c{k}" for k in range(classes)], "numbered")


def ids(data: ImageData) -> set[int]:
    return set(data.images[:, 0, 0, 0].tolist())


def first_per_class(labels: torch.Tensor, order: torch.Tensor, per_class: int, classes: int) -> set[int]:
    """Hand-written: the first ``per_class`` indices of each class in ``order``."""
    kept: set[int] = set()
    for label in range(classes):
        kept |= set([int(i) for i in order if int(labels[i]) == label][:per_class])
    return kept


def test_heldout_images_come_from_outside_the_k_split():
    full = numbered_images()
    split = heldout_split(full, 4, 0, ClassifierSelectionConfig(heldout_per_class=5, seed=1))
    # the K split is the one load_dataset picks (the first 4 per class of a shuffle seeded by split_seed)
    in_split = first_per_class(full.labels, torch.randperm(48, generator=torch.Generator().manual_seed(0)), 4, 3)
    assert ids(split.train) == in_split and not split.from_split
    # the held-out images: 5 per class of the 36 others, the first after a shuffle of them seeded by 1
    others = sorted(set(range(48)) - in_split)
    shuffled = [others[i] for i in torch.randperm(len(others), generator=torch.Generator().manual_seed(1))]
    assert ids(split.heldout) == first_per_class(full.labels, torch.tensor(shuffled), 5, 3)
    assert split.heldout.class_counts().tolist() == [5, 5, 5]
    assert "outside the K split" in split.describe()


def test_k_all_sets_the_heldout_images_aside_from_the_split():
    full = numbered_images()
    split = heldout_split(full, None, 0, ClassifierSelectionConfig(heldout_per_class=3, seed=1))
    assert split.from_split
    assert split.heldout.class_counts().tolist() == [3, 3, 3]
    assert ids(split.train) | ids(split.heldout) == set(range(48)) and not ids(split.train) & ids(split.heldout)
    # a K that leaves too few images outside it in some class is treated the same way
    assert heldout_split(full, 14, 0, ClassifierSelectionConfig(heldout_per_class=3)).from_split
    with pytest.raises(ConfigError, match="heldout_per_class: 16 images per class cannot be held out"):
        heldout_split(full, None, 0, ClassifierSelectionConfig(heldout_per_class=16))


def test_choose_steps_takes_the_highest_mean_and_a_tie_to_fewer_steps():
    assert choose_steps({1000: [0.75, 1.0], 2000: [0.875, 0.875], 4000: [0.5, 1.0]}) == 1000  # 0.875 twice
    assert choose_steps({4000: [0.5], 1000: [0.5], 2000: [0.25]}) == 1000
    assert choose_steps({1000: [0.5, 0.5], 2000: [0.5, 0.75]}) == 2000


def test_candidates_are_hand_computed_multiples():
    assert candidate_steps(1000, [4, 1, 2]) == [1000, 2000, 4000]
    assert candidate_steps(391, [0.5, 1.5]) == [196, 587]  # ceil(195.5), ceil(586.5)
    assert candidate_steps(1, [1, 1.5, 2]) == [1, 2]  # ceil(1.5) = 2 = 2 x 1: one candidate
    assert candidate_steps(3, [0.1]) == [1]  # at least one step


@pytest.mark.parametrize("value, needle", [
    ("[1, 0]", "expected a list of positive numbers"), ("[2, 2]", "lists a multiple twice"),
    ("[]", "expected a list of positive numbers")])
def test_bad_multiples_are_refused(value, needle):
    with pytest.raises(ConfigError, match=needle):
        load_study_config("configs/study-fmnist.yaml", [f"classifier_selection.multiples={value}"])


def test_bad_heldout_count_is_refused():
    with pytest.raises(ConfigError, match="classifier_selection.seeds: expected a positive integer, got 0"):
        load_study_config("configs/study-fmnist.yaml", ["classifier_selection.seeds=0"])


def test_an_arm_with_its_own_steps_trains_as_a_run_at_those_steps(tmp_path):
    """``arm_steps`` gives one arm another budget: its results equal a separate run at that budget, the other
    arm's equal a run at the study's budget, and the results record the steps each trained for."""
    full = numbered_images()
    real, test = full.subset(torch.arange(0, 48, 2)), full.subset(torch.arange(1, 48, 2))
    synthetic = full.subset(torch.arange(1, 48, 4))
    config = AugmentConfig(arms=["real", "real+synthetic"], seeds=2,
                           classifier=ClassifierConfig(steps=3, batch_size=8, eval_batch_size=16))
    mixed = run_augment(real, test, synthetic, config, tmp_path / "mixed", log=lambda _: None,
                        arm_steps={"real+synthetic": 7})
    at_7 = run_augment(real, test, synthetic, replace(config, arms=["real+synthetic"],
                       classifier=replace(config.classifier, steps=7)), tmp_path / "at7", log=lambda _: None)
    at_3 = run_augment(real, test, synthetic, replace(config, arms=["real"]), tmp_path / "at3", log=lambda _: None)
    assert mixed["arms"]["real+synthetic"]["confusion_sum"] == at_7["arms"]["real+synthetic"]["confusion_sum"]
    assert mixed["arms"]["real"]["confusion_sum"] == at_3["arms"]["real"]["confusion_sum"]
    assert [mixed["arms"][arm]["train_steps"] for arm in ("real", "real+synthetic")] == [3, 7]
    assert "| real+synthetic | 36 | 7 |" in (tmp_path / "mixed" / "summary.md").read_text()
    # resuming with the same budgets reuses every line; another budget for the arm is another result
    lines = (tmp_path / "mixed" / "results.jsonl").read_text()
    run_augment(real, test, synthetic, config, tmp_path / "mixed", log=lambda _: None, arm_steps={"real+synthetic": 7})
    assert (tmp_path / "mixed" / "results.jsonl").read_text() == lines
    trained = []
    run_augment(real, test, synthetic, config, tmp_path / "mixed", log=trained.append, arm_steps={"real+synthetic": 5})
    assert sum("real+synthetic" in line for line in trained if line.startswith("augment: seed")) == 2
    assert not any(" real " in line for line in trained if line.startswith("augment: seed"))


SELECTION = RULE + """
classifier_selection: {multiples: [1, 2], heldout_per_class: 3, seeds: 1}"""


@pytest.mark.slow
def test_a_tiny_study_chooses_each_arms_steps_on_heldout_images(tmp_path, capsys):
    """K = 4: the rule's 3 steps, candidates 3 and 6; K = all: 12 and 24, the held-out images set aside from the
    48 (3 per class, so the selection runs train on 39). Each arm's test run trains at the candidate whose
    held-out mean is highest, as read back from the selection's own augment summaries."""
    config = write_rule_study(tmp_path, SELECTION)
    assert main(["study", str(config), "--dry-run"]) == 0
    assert "K = all: classifier steps per arm among [12, 24] (held-out choice)" in capsys.readouterr().out
    assert main(["study", str(config)]) == 0
    study = tmp_path / "runs" / "rule-study"
    budgets = json.loads((study / "budgets.json").read_text())
    assert [e["classifier_steps_candidates"] for e in budgets["per_k"].values()] == [[3, 6], [12, 24]]
    for label, candidates, train_images in (("4", [3, 6], 12), ("all", [12, 24], 39)):
        choice = json.loads((study / f"K{label}" / "selection" / "choice.json").read_text())
        final = json.loads((study / f"K{label}" / "augment" / "summary.json").read_text())
        for arm in ("real", "real+synthetic", "synthetic"):
            held = {n: json.loads((study / f"K{label}" / "selection" / f"steps-{n}" / "summary.json").read_text())
                    for n in candidates}
            assert all(summary["test"]["images"] == 9 for summary in held.values())  # 3 per class held out
            assert held[candidates[0]]["arms"]["real"]["train_images"] == train_images
            means = {n: held[n]["arms"][arm]["accuracy_mean"] for n in candidates}
            best = candidates[1] if means[candidates[1]] > means[candidates[0]] else candidates[0]
            assert choice["chosen"][arm] == best
            assert final["arms"][arm]["train_steps"] == best
        assert final["test"]["images"] == 48  # the test run is scored on the test split, not the held-out one
    markdown = (study / "summary.md").read_text()
    assert "K = all: classifier steps chosen on 3 held-out training images per class, set aside" in markdown
    from dreamdata.reports.html import write_report

    assert "Classifier steps chosen on held-out training images (K = all)" in write_report(study).read_text()
    stored = yaml.safe_load((study / "study.yaml").read_text())
    assert stored["classifier_selection"]["multiples"] == [1, 2]
    # re-running resumes: nothing is trained again
    results = (study / "Kall" / "augment" / "results.jsonl").read_text()
    assert main(["study", str(config)]) == 0
    assert (study / "Kall" / "augment" / "results.jsonl").read_text() == results
    # turning selection off is another study
    assert main(["study", str(config), "classifier_selection.multiples=null"]) == 2


def test_an_arm_still_rising_at_the_grids_edge_doubles_until_it_levels_off(monkeypatch, tmp_path):
    """Held-out accuracy min(steps, 40) / 100 for `real` (rising up to 40 steps), 0.5 at every budget for
    `synthetic`: from the grid [5, 10] with a limit of 80, `real` tries 20, 40 and 80 (80 ties 40, so 40 is
    chosen and it stops); `synthetic` ties everywhere and keeps 5, trying nothing past the grid."""
    import dreamdata.experiments.study.selection as selection

    calls = []

    def fake_run_augment(train, heldout, synthetic, config, out_dir, device="cpu", log=print):
        steps = config.classifier.steps
        calls.append((steps, list(config.arms)))
        accuracy = {"real": min(steps, 40) / 100, "synthetic": 0.5}
        return {"arms": {arm: {"accuracies": [accuracy[arm]] * config.seeds} for arm in config.arms}}

    monkeypatch.setattr(selection, "run_augment", fake_run_augment)
    full = numbered_images()
    split = heldout_split(full, 4, 0, ClassifierSelectionConfig(heldout_per_class=2))
    record = selection.select_classifier_steps(
        split, None, AugmentConfig(arms=["real", "synthetic"]), [5, 10], ClassifierSelectionConfig(seeds=2),
        tmp_path, log=lambda _: None, limit=80)
    assert calls == [(5, ["real", "synthetic"]), (10, ["real", "synthetic"]), (20, ["real"]), (40, ["real"]),
                     (80, ["real"])]
    assert record["chosen"] == {"real": 40, "synthetic": 5}
    assert sorted(record["scores"]["real"], key=int) == ["5", "10", "20", "40", "80"]
    table = "\n".join(selection.selection_markdown(record))
    assert "| real | 5.00 | 10.00 | 20.00 | **40.00** | 40.00 |" in table
    assert "| synthetic | **50.00** | 50.00 |  |  |  |" in table
    # with no limit the grid is all there is
    calls.clear()
    assert selection.select_classifier_steps(split, None, AugmentConfig(arms=["real", "synthetic"]), [5, 10],
                                             ClassifierSelectionConfig(seeds=2), tmp_path,
                                             log=lambda _: None)["chosen"] == {"real": 10, "synthetic": 5}
    assert [steps for steps, _ in calls] == [5, 10]


def test_still_rising_is_the_arms_whose_largest_candidate_is_best():
    from dreamdata.experiments.study.selection import still_rising

    scores = {"a": {1: [0.5], 2: [0.75]}, "b": {1: [0.75], 2: [0.5]}, "c": {1: [0.5], 2: [0.5]}}
    assert still_rising(scores, 4) == {"a": 4}
    assert still_rising(scores, 3) == {} and still_rising(scores, None) == {}
