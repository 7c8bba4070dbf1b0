"""Classifiers, metrics and statistics against known answers; `augment` and `study` end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_pattern_images

from dreamdata.classify import (
    ClassifierConfig,
    accuracy,
    build_classifier,
    class_scores,
    confusion_matrix,
    paired_comparison,
    predict_probabilities,
    train_classifier,
)
from dreamdata.classify.train import augment_batch, lr_factor
from dreamdata.cli import main
from dreamdata.data import resolve_hflip
from dreamdata.errors import ConfigError
from dreamdata.experiments.study.arms import arm_file_stem, arm_stages, parse_arms, synthetic_subset, uses_synthetic
from dreamdata.experiments.study.config import load_study_config
from dreamdata.experiments.study.pipeline import generator_run_config


def test_paired_t_test_matches_students_sleep_data():
    """Cushny & Peebles' sleep data as analysed by Student (1908); R's t.test(paired = TRUE) gives
    t = 4.0621, df = 9, p = 0.002833, 95% CI [0.7001142, 2.4598858] for drug 2 - drug 1."""
    drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    result = paired_comparison(drug1, drug2)
    assert result.n == 10
    assert result.mean_difference == pytest.approx(1.58)
    assert result.t == pytest.approx(4.0621, abs=1e-4)
    assert result.p_value == pytest.approx(0.002833, abs=1e-6)
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.7001142, abs=1e-6), pytest.approx(2.4598858, abs=1e-6))
    single = paired_comparison([0.5], [0.6])
    assert single.mean_difference == pytest.approx(0.1) and np.isnan(single.ci_low) and np.isnan(single.p_value)


def test_confusion_matrix_and_scores_by_hand():
    true = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    confusion = confusion_matrix(true, predicted, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    scores = class_scores(confusion)
    assert scores.precision.tolist() == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert scores.recall.tolist() == pytest.approx([1 / 2, 1.0, 2 / 3])
    assert scores.f1.tolist() == pytest.approx([1 / 2, 0.8, 0.8])
    assert scores.support.tolist() == [2, 2, 3]
    assert accuracy(confusion) == pytest.approx(5 / 7)
    never = class_scores(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2))
    assert never.precision.tolist() == [0.5, 0.0] and never.f1.tolist() == pytest.approx([2 / 3, 0.0])


def test_classifiers_map_images_to_logits():
    for name in ("small_cnn", "resnet18"):
        network = build_classifier(name, 3, 10).eval()
        assert network(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ConfigError, match="resnet50"):
        build_classifier("resnet50", 1, 2)


def identify_augmentation(out: torch.Tensor, image: torch.Tensor, p: int) -> list[tuple[bool, int, int]]:
    """Every ``(flipped, dy, dx)`` whose flip-then-shift of ``image`` (zeros shifted in) equals ``out``,
    built by hand: the image pasted into a zero canvas at offset ``(p - dy, p - dx)``."""
    channels, height, width = image.shape
    found = []
    for flipped in (False, True):
        source = image.flip(2) if flipped else image
        for dy in range(-p, p + 1):
            for dx in range(-p, p + 1):
                canvas = torch.zeros(channels, height + 2 * p, width + 2 * p)
                canvas[:, p:p + height, p:p + width] = source
                # output pixel (i, j) is input pixel (i + dy, j + dx): a shift by (-dy, -dx)
                window = canvas[:, p + dy:p + dy + height, p + dx:p + dx + width]
                if torch.equal(out, window):
                    found.append((flipped, dy, dx))
    return found


def test_batched_augmentation_flips_and_translates():
    """On 200 images whose pixels are all distinct and non-zero, each output is exactly one flip-and-shift
    of its input, with zeros shifted in: about half are flipped, and all 9 shifts of padding 1 occur."""
    count, p = 200, 1
    images = (torch.arange(count * 2 * 4 * 5, dtype=torch.float32).reshape(count, 2, 4, 5) + 1)
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(images, hflip=True, crop_padding=p, generator=generator)
    assert out.shape == images.shape and not torch.equal(out, images)
    draws = []
    for k in range(count):
        found = identify_augmentation(out[k], images[k], p)
        assert len(found) == 1, (k, found)  # distinct pixels: exactly one explanation
        draws.append(found[0])
    flips = sum(flipped for flipped, _, _ in draws)
    assert 70 <= flips <= 130  # Binomial(200, 1/2): mean 100, sd 7.1; this is beyond 4 sd
    shifts = {(dy, dx): sum(1 for _, y, x in draws if (y, x) == (dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert all(n >= 6 for n in shifts.values()), shifts  # each of the 9: expected 22.2
    # the zero border: a shifted image has a full row/column of zeros on the side shifted in, never elsewhere
    for k, (_, dy, dx) in enumerate(draws):
        assert bool((out[k] == 0).any()) == ((dy, dx) != (0, 0))
        if dy == 1:
            assert torch.equal(out[k, :, -1], torch.zeros(2, 5))
        if dx == -1:
            assert torch.equal(out[k, :, :, 0], torch.zeros(2, 4))
    # flips only: the same flip rate, no shift; neither: the identity
    only_flips = augment_batch(images, hflip=True, crop_padding=0, generator=torch.Generator().manual_seed(1))
    flipped = [bool(torch.equal(only_flips[k], images[k].flip(2))) for k in range(count)]
    assert all(flipped[k] or torch.equal(only_flips[k], images[k]) for k in range(count))
    assert 70 <= sum(flipped) <= 130
    assert torch.equal(augment_batch(images, hflip=False, crop_padding=0, generator=generator), images)
    never_flipped = augment_batch(images, hflip=False, crop_padding=p, generator=generator)
    assert all(not identify_augmentation(never_flipped[k], images[k], p)[0][0] for k in range(count))
    assert lr_factor(0, 100, 0.1) == pytest.approx(0.1) and lr_factor(100, 100, 0.1) == 0.0


def test_small_cnn_learns_a_separable_dataset():
    images, labels = make_pattern_images(per_class=32, seed=0)
    test_images, test_labels = make_pattern_images(per_class=32, seed=1)
    def to_tensor(array):
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()

    config = ClassifierConfig(steps=40, batch_size=32, hflip=False, crop_padding=0)
    network = train_classifier(to_tensor(images), torch.from_numpy(labels), 3, config, seed=0)
    predicted = predict_probabilities(network, to_tensor(test_images)).argmax(1)
    assert accuracy(confusion_matrix(torch.from_numpy(test_labels), predicted, 3)) >= 0.95


def test_fine_tuning_starts_from_the_given_weights_and_leaves_them_alone():
    """``initial`` replaces the seeded initial weights: with a zero learning rate (AdamW moves nothing, weight
    decay included, as both scale with lr) fine-tuning returns exactly the initial weights, whatever its seed;
    with a real learning rate it moves away from them and leaves the initial network untouched. (Weights only:
    batch-norm running statistics follow the data in training mode whatever the learning rate.)"""
    images, labels = make_pattern_images(per_class=8, seed=0)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels)
    config = ClassifierConfig(steps=5, batch_size=8, hflip=False, crop_padding=0)
    frozen_config = ClassifierConfig(steps=5, batch_size=8, lr=0.0, hflip=False, crop_padding=0)

    def weights(network):
        return {name: value.detach().clone() for name, value in network.named_parameters()}

    def same(a, b):
        return all(torch.equal(a[name], b[name]) for name in a)

    first = train_classifier(images, labels, 3, config, seed=0)
    before = weights(first)
    frozen = train_classifier(images.flip(3), labels, 3, frozen_config, seed=7, initial=first)
    assert same(weights(frozen), before)
    fresh = train_classifier(images.flip(3), labels, 3, frozen_config, seed=7)
    assert not same(weights(fresh), before)  # without ``initial``: seed 7's own initial weights
    tuned = train_classifier(images.flip(3), labels, 3, config, seed=7, initial=first)
    assert same(weights(first), before) and not same(weights(tuned), before)


def test_progress_bar_is_labelled_and_trains_the_same_weights(capsys):
    """A progress bar only reports: the same seed trains bit-identical weights with and without it, and the bar
    (on stderr) carries its label and the step budget."""
    images, labels = make_pattern_images(per_class=8, seed=0)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels)
    config = ClassifierConfig(steps=6, batch_size=8)
    quiet = train_classifier(images, labels, 3, config, seed=3)
    assert capsys.readouterr().err == ""
    shown = train_classifier(images, labels, 3, config, seed=3, progress="seed 3 real")
    err = capsys.readouterr().err
    assert "seed 3 real" in err and "/6 " in err
    assert all(torch.equal(a, b) for a, b in zip(quiet.state_dict().values(), shown.state_dict().values()))


def test_arms_and_synthetic_ratio():
    assert parse_arms("real, real+synthetic,synthetic") == ["real", "real+synthetic", "synthetic"]
    assert parse_arms("real,synthetic>real,real>real") == ["real", "synthetic>real", "real>real"]
    for bad in ("real+real", "fake", "", "synthetic>", ">real", "real>fake", "real+real>synthetic", "real,real"):
        with pytest.raises(ConfigError):
            parse_arms(bad)
    assert arm_stages("synthetic>real+synthetic") == ["synthetic", "real+synthetic"]
    assert [uses_synthetic(arm) for arm in ("real", "real>real", "synthetic>real", "real+synthetic")] == [
        False, False, True, True]
    assert [arm_file_stem(arm) for arm in ("real+synthetic", "synthetic>real")] == [
        "real_synthetic", "synthetic-then-real"]
    from dreamdata.data.image_data import ImageData

    real = ImageData(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]), ["a", "b"], "real")
    synthetic = ImageData(torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1).expand(10, 1, 2, 2),
                          torch.tensor([0, 1] * 5), ["a", "b"], "syn")
    half = synthetic_subset(synthetic, real, 1.5)  # 3 per class, the first ones
    assert half.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]


@pytest.fixture
def pattern_npzs(tmp_path):
    real_images, real_labels = make_pattern_images(per_class=12, seed=0)
    synthetic_images, synthetic_labels = make_pattern_images(per_class=12, seed=2)
    names = np.array(["hstripes", "vstripes", "square"])
    np.savez(tmp_path / "real.npz", images=real_images, labels=real_labels, class_names=names)
    np.savez(tmp_path / "syn.npz", images=synthetic_images, labels=synthetic_labels, class_names=names)
    return tmp_path / "real.npz", tmp_path / "syn.npz"


@pytest.mark.slow
def test_augment_cli_reports_every_arm_and_resumes(pattern_npzs, tmp_path, capsys):
    real, synthetic = pattern_npzs
    out = tmp_path / "study"
    args = ["augment", "--real", f"npz:{real}", "--real-per-class", "4", "--synthetic", str(synthetic),
            "--seeds", "2", "--steps", "6", "--batch-size", "8", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "real+synthetic - real" in printed and "horizontal flips off (the default for npz: data)" in printed
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"real", "real+synthetic", "synthetic"}
    assert summary["arms"]["real"]["train_images"] == 12 and summary["arms"]["real+synthetic"]["train_images"] == 48
    assert set(summary["comparisons"]) == {"real+synthetic - real", "synthetic - real"}
    # every accuracy is the trace of its confusion matrix over its total (the test split: same total each time)
    records = [json.loads(line) for line in lines]
    totals = {int(np.sum(r["confusion"])) for r in records}
    assert len(totals) == 1 and totals.pop() > 0
    for r in records:
        assert r["accuracy"] == pytest.approx(np.trace(r["confusion"]) / np.sum(r["confusion"]))
    by_arm = {arm: [next(r for r in records if (r["arm"], r["seed"]) == (arm, seed)) for seed in (0, 1)]
              for arm in summary["arms"]}
    for arm, row in summary["arms"].items():
        assert row["accuracies"] == [r["accuracy"] for r in by_arm[arm]]
        assert row["accuracy_mean"] == pytest.approx(np.mean(row["accuracies"]))
        assert row["confusion_sum"] == np.sum([r["confusion"] for r in by_arm[arm]], axis=0).tolist()
    # the paired difference is the mean over seeds of (arm - real), seed by seed
    for arm in ("real+synthetic", "synthetic"):
        differences = [a - b for a, b in zip(summary["arms"][arm]["accuracies"], summary["arms"]["real"]["accuracies"])]
        comparison = summary["comparisons"][f"{arm} - real"]
        assert comparison["n"] == 2 and comparison["mean_difference"] == pytest.approx(np.mean(differences))
    for name in ("summary.md", "confusion-real.png", "confusion-real_synthetic.png", "confusion-synthetic.png"):
        assert (out / name).is_file(), name
    report = (out / "summary.md").read_text()
    assert "horizontal flips off" in report  # npz: data is not flipped unless asked
    assert all(json.loads(line)["identity"]["classifier"]["hflip"] is False for line in lines)
    assert "Confusion matrix, real+synthetic" in report
    assert "| true \\ predicted | hstripes | vstripes | square |" in report
    assert main(args) == 0  # resumes: nothing retrained
    assert (out / "results.jsonl").read_text().splitlines() == lines
    # another synthetic set (here: 1 synthetic per real image) retrains only the arms that use it
    assert main(args + ["--synthetic-ratio", "1"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 6 + 4
    again = json.loads((out / "summary.json").read_text())
    assert again["arms"]["real"]["accuracies"] == summary["arms"]["real"]["accuracies"]
    assert again["arms"]["real+synthetic"]["train_images"] == 24
    assert main(args[:-2] + ["--out", str(tmp_path / "x"), "--arms", "real,synthetic", "--synthetic",
                             str(tmp_path / "nope")]) == 2


def test_staged_arm_pretrains_on_synthetic_then_fine_tunes_on_real(pattern_npzs, tmp_path):
    """``synthetic>real`` is the classifier trained on the synthetic set and then on the real one (the same seed,
    ``--steps`` each), composed here by hand from ``train_classifier``; ``real>real`` does not depend on the
    synthetic set, so another dreamed set retrains only the arms that use it."""
    from dreamdata.data import load_dataset
    from dreamdata.config import DataConfig

    real, synthetic = pattern_npzs
    out = tmp_path / "staged"
    args = ["augment", "--real", f"npz:{real}", "--real-per-class", "4", "--synthetic", str(synthetic),
            "--arms", "real,synthetic>real,real>real", "--seeds", "1", "--steps", "6", "--batch-size", "8",
            "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    records = {r["arm"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert records["synthetic>real"]["stage_images"] == [36, 12] and records["synthetic>real"]["train_steps"] == 12
    assert records["real>real"]["stage_images"] == [12, 12] and records["real"]["train_steps"] == 6

    train = load_dataset(DataConfig(dataset=f"npz:{real}", per_class=4), "train")
    test = load_dataset(DataConfig(dataset=f"npz:{real}"), "test")
    dreamed = load_dataset(DataConfig(dataset=f"npz:{synthetic}"), "train")
    config = ClassifierConfig(steps=6, batch_size=8, hflip=False)
    pretrained = train_classifier(dreamed.images, dreamed.labels, 3, config, seed=0)
    tuned = train_classifier(train.images, train.labels, 3, config, seed=0, initial=pretrained)
    predicted = predict_probabilities(tuned, test.images).argmax(1)
    assert records["synthetic>real"]["confusion"] == confusion_matrix(test.labels, predicted, 3).tolist()

    report = (out / "summary.md").read_text()
    assert "| synthetic>real | 36 > 12 |" in report and "Staged arms (synthetic>real, real>real)" in report
    assert (out / "confusion-synthetic-then-real.png").is_file()
    assert main(args + ["--synthetic-ratio", "1"]) == 0
    arms = [json.loads(line)["arm"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert arms == ["real", "synthetic>real", "real>real", "synthetic>real"]


def test_hflip_options_of_augment_and_classifier(pattern_npzs, tmp_path, capsys):
    """--hflip/--no-hflip override the dataset default (off for npz:); the choice is printed and recorded,
    and a study asked to flip does not reuse results trained without flips."""
    from dreamdata.classify.checkpoint import load_classifier
    from safetensors import safe_open

    real, synthetic = pattern_npzs
    common = ["--real", f"npz:{real}", "--steps", "3", "--batch-size", "8", "--device", "cpu"]
    for flag, expected, phrase in (([], False, "off (the default for npz: data)"), (["--hflip"], True, "on (--hflip)"),
                                   (["--no-hflip"], False, "off (--no-hflip)")):
        path = tmp_path / f"clf{len(flag)}{expected}.safetensors"
        assert main(["classifier", *common, *flag, "--out", str(path)]) == 0
        assert f"horizontal flips {phrase}" in capsys.readouterr().out
        load_classifier(path)  # still a valid classifier file
        with safe_open(str(path), framework="pt") as handle:
            assert json.loads(handle.metadata()["extra"])["hflip"] is expected
    out = tmp_path / "flip-study"
    args = ["augment", *common, "--arms", "real", "--seeds", "1", "--out", str(out)]
    assert main(args) == 0
    assert main(args + ["--hflip"]) == 0  # another classifier config: trained again, not reused
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["identity"]["classifier"]["hflip"] for r in records] == [False, True]
    assert "horizontal flips on" in (out / "summary.md").read_text()
    assert "augment: horizontal flips on (--hflip)" in capsys.readouterr().out


def test_augment_results_are_tied_to_the_test_set(pattern_npzs, tmp_path):
    """Scored on another --real-test set, the same study directory trains again instead of reusing results
    scored elsewhere, and the summary names the set; a line written before the test set was recorded (no
    test keys in its identity) is still reused."""
    real, _ = pattern_npzs
    other = tmp_path / "other.npz"
    images, labels = make_pattern_images(per_class=5, seed=3)
    np.savez(other, images=images, labels=labels, class_names=np.array(["hstripes", "vstripes", "square"]))
    out = tmp_path / "study"
    args = ["augment", "--real", f"npz:{real}", "--real-per-class", "4", "--arms", "real", "--seeds", "1",
            "--steps", "3", "--batch-size", "8", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    assert f"## Accuracy on npz {real}, 36 images (1 seeds" in (out / "summary.md").read_text()
    assert main(args + ["--real-test", f"npz:{other}"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [int(np.sum(r["confusion"])) for r in records] == [36, 15]  # trained and scored again
    assert f"## Accuracy on npz {other}, 15 images" in (out / "summary.md").read_text()
    legacy = dict(records[0], identity={key: value for key, value in records[0]["identity"].items()
                                        if key not in ("test_count", "test_sha256")})
    (out / "results.jsonl").write_text(json.dumps(legacy) + "\n")
    assert main(args) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 1  # reused, not trained again


def write_tiny_study(tmp_path, real, name: str, budget: str, dream: str, seeds: int, classifier_steps: int):
    """A one-K (4 images per class) study file over the ``tiny`` preset; ``budget`` is the generator's
    budget lines (``minutes: [...]`` and/or ``steps: [...]``)."""
    config = tmp_path / "study.yaml"
    config.write_text(f"""
name: {name}
runs_dir: {tmp_path / 'runs'}
device: cpu
real: {{dataset: "npz:{real}", per_class: [4]}}
generator:
  config: tiny
  overrides: [train.checkpoint_every=0, train.sample_grid=false, data.image_size=null]
  {budget}
dream: {dream}
augment: {{seeds: {seeds}, classifier: {{batch_size: 8}}}}
classifier_steps: [{classifier_steps}]
""")
    return config


@pytest.mark.slow
def test_study_filters_the_dream_by_a_real_data_classifier_and_says_so(pattern_npzs, tmp_path):
    """dream.keep_top: the study trains a filter classifier on the K real images, keeps per class the dreamed
    images it gives the highest p(label | x), and its reports say that the synthetic set is a selection."""
    real, _ = pattern_npzs
    config = write_tiny_study(tmp_path, real, "filtered", budget="steps: [3]",
                              dream="{per_class: [4], steps: 2, batch: 6, chunk: 6, workers: 1, keep_top: 0.5}",
                              seeds=1, classifier_steps=4)
    config.write_text(config.read_text().replace("augment: {", "augment: {arms: [real, synthetic], "))
    assert main(["study", str(config)]) == 0
    k_dir = tmp_path / "runs" / "filtered" / "K4"
    summary = json.loads((k_dir.parent / "summary.json").read_text())
    assert summary["per_k"]["4"]["synthetic_images"] == 6  # ceil(0.5 x 4) = 2 of each of the 3 classes
    record = summary["per_k"]["4"]["filter"]
    assert (record["dreamed"], record["kept"], record["keep_top"]) == (12, 6, 0.5)
    assert "kept the top 50% per class by p(label | x) of a classifier trained on the real images (6 of 12; " in (
        k_dir.parent / "summary.md").read_text()
    # the same dream unfiltered with the CLI, scored by hand with the study's filter classifier: the study kept
    # exactly the 2 most probable of each class
    from dreamdata.classify.checkpoint import load_classifier

    unfiltered = tmp_path / "unfiltered"
    assert main(["dream", str(k_dir / "generator"), "--per-class", "4", "--out", str(unfiltered), "--sampler", "ddim",
                 "--steps", "2", "--guidance", "1", "--seed", "0", "--batch", "6", "--chunk", "6", "--workers", "1",
                 "--device", "cpu"]) == 0
    everything = np.load(unfiltered / "dataset.npz")
    classifier = load_classifier(k_dir / "filter-classifier.safetensors")
    with torch.no_grad():
        x = torch.from_numpy(everything["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        probabilities = classifier.network.eval()(x).softmax(dim=1).double()
    p_label = [float(probabilities[i, label]) for i, label in enumerate(everything["labels"])]
    expected = set()
    for label in range(3):
        members = sorted((i for i, y in enumerate(everything["labels"]) if y == label), key=lambda i: -p_label[i])
        assert len(members) == 4 and p_label[members[1]] > p_label[members[2]] + 1e-6  # no tie at the cut
        expected |= {int(everything["indices"][i]) for i in members[:2]}
    assert set(np.load(k_dir / "synthetic" / "dataset.npz")["indices"].tolist()) == expected
    assert record["mean_confidence_all"] == pytest.approx(np.mean(p_label), abs=1e-5)


@pytest.mark.slow
def test_study_chains_train_dream_augment(pattern_npzs, tmp_path):
    real, _ = pattern_npzs
    config = write_tiny_study(tmp_path, real, "tiny-study", budget="minutes: [0.02]",
                              dream="{per_class: [3], steps: 3, batch: 9, chunk: 5, workers: 2}", seeds=2,
                              classifier_steps=4)
    assert main(["study", str(config), "--dry-run"]) == 0
    assert main(["study", str(config)]) == 0
    study = tmp_path / "runs" / "tiny-study"
    for name in ("summary.md", "summary.json", "accuracy-vs-k.png", "study.yaml", "K4/augment/summary.md",
                 "K4/synthetic/manifest.json", "K4/timings.json"):
        assert (study / name).is_file(), name
    summary = json.loads((study / "summary.json").read_text())
    assert summary["per_k"]["4"]["synthetic_images"] == 9 and summary["per_k"]["4"]["real_images"] == 12
    dreaming = summary["per_k"]["4"]["dreaming"]  # dream.workers: 2 processes share the 2 chunks
    assert (dreaming["images"], dreaming["layout"]) == (9, "2 processes x 1 thread")
    # the summary says how the images were dreamed: the config's sampler settings (the study defaults: DDIM,
    # w = 1, fp32, seed 0; 3 steps from the config)
    assert summary["per_k"]["4"]["dreamed_with"] == {"sampler": "ddim", "steps": 3, "spacing": "linspace",
                                                     "guidance": 1.0, "guidance_interval": None, "precision": None,
                                                     "seed": 0, "autoguide_weight": None, "autoguide_step": None}
    assert "Dreamed with: K = 4: ddim, 3 steps (linspace), guidance 1, fp32, seed 0, " in (
        study / "summary.md").read_text()
    # npz: data: the classifiers are not flipped (the dataset default), and both reports say so
    assert "horizontal flips off (the default for npz: data)" in (study / "summary.md").read_text()
    assert "horizontal flips off" in (study / "K4" / "augment" / "summary.md").read_text()
    results = (study / "K4" / "augment" / "results.jsonl").read_text().splitlines()
    assert all(json.loads(line)["identity"]["classifier"]["hflip"] is False for line in results)
    assert main(["study", str(config)]) == 0  # everything done: resumes to the same report
    assert main(["study", str(config), "augment.seeds=3"]) == 2  # another config into the same directory
    with pytest.raises(ConfigError, match="generator.minutes"):
        load_study_config(str(config), ["generator.minutes=[1, 2]"])
    with pytest.raises(ConfigError, match="generator.steps"):
        load_study_config(str(config), ["generator.steps=[1, 2]"])
    for bad in ("0", "two"):
        with pytest.raises(ConfigError, match="dream.workers: expected auto or a positive number"):
            load_study_config(str(config), [f"dream.workers={bad}"])


@pytest.mark.parametrize("name", ["study-fmnist.yaml", "study-cifar10.yaml", "study-fmnist-gan.yaml"])
def test_shipped_study_configs_resolve(name):
    """The study configs in configs/ pass validation (one budget per K), and each K's generator run config -
    the preset plus the study's overrides - resolves, so `dreamdata study` does not fail hours in."""
    path = Path(__file__).resolve().parents[1] / "configs" / name
    config = load_study_config(str(path))
    assert config.augment.arms[0] == "real"  # the baseline of every paired comparison
    for index, k in enumerate(config.real.per_class):
        run = generator_run_config(config, index)
        assert run.model.class_conditional  # the dream needs a class-conditional generator
        assert (run.data.per_class, run.data.dataset) == (k, config.real.dataset)
        assert resolve_hflip(run.data.hflip, run.data.dataset) == (config.real.dataset != "mnist")
        unit, amount = config.generator.budget(index)
        assert getattr(run.train, unit) == amount


@pytest.mark.slow
def test_study_generator_step_budget_and_older_study_files(pattern_npzs, tmp_path):
    """`generator.steps` trains each K's generator for exactly that many optimiser steps (replacing the
    machine-dependent minutes budget), and a study.yaml written before a key existed still resumes."""
    real, _ = pattern_npzs
    config = write_tiny_study(tmp_path, real, "step-study", budget="minutes: [100]\n  steps: [3]",
                              dream="{per_class: [2], steps: 2, batch: 10, chunk: 10}", seeds=1, classifier_steps=2)
    assert main(["study", str(config)]) == 0
    study = tmp_path / "runs" / "step-study"
    assert json.loads((study / "K4" / "generator" / "study-stage-complete.json").read_text()) == {"step": 3}
    stored = yaml.safe_load((study / "study.yaml").read_text())
    del stored["generator"]["steps"], stored["dream"]["keep_top"]  # as written by an older dreamdata
    (study / "study.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    assert main(["study", str(config), "generator.steps=[3]"]) == 2  # steps=[3] vs the stored (default) null
    assert main(["study", str(config), "generator.steps=null"]) == 0  # the stored config: resumes
