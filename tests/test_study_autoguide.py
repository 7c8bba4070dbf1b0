"""A study that dreams autoguided (`dream.autoguide_step`, Karras et al. 2024): the generator keeps the guide's
checkpoint through the rotation (`train.keep_steps`) without training differently, bad settings are refused by
key, and the study's dreamed set is the one `dreamdata dream --autoguide` draws from the same generator (an
independent path through the CLI)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file
from test_study_budgets import assert_refused_by_key, write_rule_study

from dreamdata.cli import main
from dreamdata.errors import ConfigError

ONE_K = """classifier_steps: [2]
classifier_epochs: null
dream: {per_class: [2], per_class_multiple: null, steps: 2, batch: 8, chunk: 8, guidance: 0.0, workers: 1}"""


def _train(tiny_overrides, tmp_path, name, extra):
    from dreamdata.config import load_config
    from dreamdata.training.trainer import train

    overrides = [*tiny_overrides, "train.steps=4", "train.sample_grid=false", f"runs_dir={tmp_path}", f"name={name}",
                 *extra]
    return train(load_config("tiny", overrides)).run_dir


def test_keep_steps_survive_the_rotation_and_change_no_weight(tmp_path, tiny_overrides):
    # keep the newest one checkpoint (every step written), and step 2 for good; a step 3 kept with no checkpoint
    # interval at all is written anyway. By hand: steps 2 and 4 stay, then 3 and 4.
    rotated = _train(tiny_overrides, tmp_path, "rotated", ["train.checkpoint_every=1", "train.keep_checkpoints=1",
                                                           "train.keep_steps=[2]"])
    assert sorted(p.name for p in (rotated / "checkpoints").glob("step-*.safetensors")) == [
        "step-000000002.safetensors", "step-000000004.safetensors"]
    assert sorted(p.name for p in (rotated / "checkpoints").glob("step-*.state.pt")) == [
        "step-000000002.state.pt", "step-000000004.state.pt"]
    unspaced = _train(tiny_overrides, tmp_path, "unspaced", ["train.checkpoint_every=0", "train.keep_steps=[3]"])
    assert sorted(p.name for p in (unspaced / "checkpoints").glob("step-*.safetensors")) == [
        "step-000000003.safetensors", "step-000000004.safetensors"]
    # writing a checkpoint more does not touch the training: the last weights equal a run that kept nothing extra
    plain = _train(tiny_overrides, tmp_path, "plain", ["train.checkpoint_every=0"])
    ours = load_file(rotated / "checkpoints" / "step-000000004.safetensors")
    theirs = load_file(plain / "checkpoints" / "step-000000004.safetensors")
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)


@pytest.mark.parametrize("override, expected", [("train.keep_steps=[0]", "a list of positive step numbers"),
                                                ("train.keep_steps=[2.5]", "expected int, got 2.5"),
                                                ("train.keep_steps=500", "expected a list")])
def test_bad_keep_steps_are_refused_by_key(tiny_overrides, override, expected):
    from dreamdata.config import load_config

    with pytest.raises(ConfigError) as error:
        load_config("tiny", [*tiny_overrides, override])
    assert "train.keep_steps" in str(error.value) and expected in str(error.value), error.value


@pytest.mark.parametrize("overrides, needles", [
    (["dream.autoguide_step=[2, 2]"], ["dream.autoguide_step", "one training step (or null) per K, 1 in all"]),
    (["dream.autoguide_step=[4]"], ["dream.autoguide_step: 4 for K = 4", "generator's last step (4"]),
    (["dream.autoguide_step=[0]"], ["dream.autoguide_step", "positive training steps or null", "0"]),
    (["dream.autoguide_step=[2]", "dream.autoguide_weight=0"], ["dream.autoguide_weight", "w > 0", "got 0"]),
    (["dream.autoguide_step=[2]", "distill.from_steps=4"], ["dream.autoguide_step", "distill.from_steps", "student"]),
])
def test_autoguide_settings_a_study_cannot_dream_are_refused(tmp_path, overrides, needles):
    base = ["real.per_class=[4]", "generator.steps=[4]"]
    # off for the one K: accepted
    assert_refused_by_key(write_rule_study(tmp_path, ONE_K), base + ["dream.autoguide_step=[null]"], overrides,
                          needles)


def test_the_dry_run_says_which_k_is_autoguided_by_which_step(tmp_path, capsys):
    """Two K's, the first guided by its step 2 at w = 0.5 and K = all unguided: the plan printed before anything
    runs says so per K, and the resolved YAML keeps the list as given."""
    path = write_rule_study(tmp_path, ONE_K.replace("[2]", "[2, 2]"))
    assert main(["study", str(path), "generator.steps=[4, 6]", "dream.autoguide_step=[2, null]",
                 "dream.autoguide_weight=0.5", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "#   dreamed autoguided (w = 0.5) by each generator's own EMA at an earlier step: K = 4 step 2, " \
           "K = all unguided\n" in printed
    plan = {line.split(":")[0]: line for line in printed.splitlines() if line.startswith("#   K = ")}
    assert plan["#   K = 4"].endswith("generator 4 steps, autoguided by its step-2 EMA")
    assert plan["#   K = all"].endswith("generator 6 steps")
    assert yaml.safe_load(printed)["dream"]["autoguide_step"] == [2, None]
    # unguided everywhere: no word of it
    assert main(["study", str(path), "generator.steps=[4, 6]", "--dry-run"]) == 0
    assert "autoguided" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_study_dreams_autoguided_by_its_generators_earlier_checkpoint(tmp_path, capsys):
    """K = 4 on the tiny patterns, a 30-step generator (no checkpoint interval) autoguided by its step 2 at w = 1.5:
    the step-2 checkpoint is kept, the manifest names its hash and the weight, and `dreamdata dream --autoguide 2
    --autoguide-weight 1.5` on the study's generator draws the same images byte for byte; unguided, it does not."""
    path = write_rule_study(tmp_path, ONE_K)
    overrides = ["real.per_class=[4]", "generator.steps=[30]", "dream.steps=4", "dream.autoguide_step=[2]",
                 "dream.autoguide_weight=1.5"]
    assert main(["study", str(path), *overrides]) == 0
    study = tmp_path / "runs" / "rule-study" / "K4"
    guide = study / "generator" / "checkpoints" / "step-000000002.safetensors"
    assert guide.is_file()
    spec = json.loads((study / "synthetic" / "manifest.json").read_text())["spec"]
    assert spec["autoguide_sha256"] == hashlib.sha256(guide.read_bytes()).hexdigest()
    assert (spec["autoguide_weight"], spec["step"]) == (1.5, 30)
    # 30 generator steps: after 4 every pixel saturates to 0 or 255, guided or not, and the guide could not show
    common = ["--per-class", "2", "--seed", "0", "--batch", "8", "--chunk", "8", "--workers", "1", "--steps", "4",
              "--sampler", "ddim", "--guidance", "0"]
    assert main(["dream", str(study / "generator"), *common, "--autoguide", "2", "--autoguide-weight", "1.5",
                 "--out", str(tmp_path / "by-cli")]) == 0
    assert main(["dream", str(study / "generator"), *common, "--out", str(tmp_path / "unguided")]) == 0
    with np.load(study / "synthetic" / "dataset.npz") as ours, np.load(tmp_path / "by-cli" / "dataset.npz") as cli, \
            np.load(tmp_path / "unguided" / "dataset.npz") as unguided:
        assert np.array_equal(ours["images"], cli["images"]) and np.array_equal(ours["labels"], cli["labels"])
        assert not np.array_equal(ours["images"], unguided["images"])
    summary = (tmp_path / "runs" / "rule-study" / "summary.md").read_text()
    assert "autoguided by its step-2 EMA (w = 1.5)" in summary
