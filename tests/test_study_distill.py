"""A study that dreams with a progressively distilled student (issue #19 item 3, `distill.from_steps`): the dream
settings a student cannot sample are refused by key, and the study's dreamed set is the one `dreamdata dream`
draws from the `dreamdata distill` run it made (an independent path through the CLI)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from test_study_budgets import assert_refused_by_key, write_rule_study

from dreamdata.cli import main

ONE_K = """classifier_steps: [2]
classifier_epochs: null
dream: {per_class: [2], per_class_multiple: null, steps: 2, batch: 8, chunk: 8, guidance: 1.0, workers: 1}"""


@pytest.mark.parametrize("overrides, needles", [
    (["dream.steps=3"], ["dream.steps: 3", "distill.from_steps = 8", "8 / 2, / 4"]),
    (["dream.steps=8"], ["dream.steps: 8"]),  # no halving at all
    (["dream.sampler=dpm++2m"], ["dream.sampler: 'dpm++2m'", "ddim"]),
    (["dream.guidance_interval=[0.1, 5.0]"], ["dream.guidance_interval", "baked in"]),
    (["distill.from_steps=1"], ["distill.from_steps", ">= 2"]),
    (["distill.steps_per_round=0"], ["distill.steps_per_round", "positive"]),
])
def test_dream_settings_a_student_cannot_sample_are_refused(tmp_path, overrides, needles):
    base = ["real.per_class=[4]", "generator.steps=[2]", "distill.from_steps=8", "dream.steps=2"]
    # 8 -> 4 -> 2: two halvings, accepted
    assert_refused_by_key(write_rule_study(tmp_path, ONE_K), base, overrides, needles)


@pytest.mark.slow
def test_a_study_dreams_with_the_student_it_distilled(tmp_path, capsys):
    """K = 4 on the tiny patterns: the generator's 4-step DDIM distilled to 2 steps (2 updates per halving, one
    halving) with w = 1 baked in. The study's K4/distilled is a distillation run of K4/generator, the dreamed
    set names its newest checkpoint (sha256 of the file), and `dreamdata dream` on that run with the same seed,
    count and chunking draws the same images, byte for byte."""
    path = write_rule_study(tmp_path, ONE_K)
    overrides = ["real.per_class=[4]", "generator.steps=[2]", "distill.from_steps=4", "distill.steps_per_round=2"]
    assert main(["study", str(path), *overrides]) == 0
    study = tmp_path / "runs" / "rule-study" / "K4"
    plan = json.loads((study / "distilled" / "distill.json").read_text())
    assert (plan["from_steps"], plan["to_steps"], plan["steps_per_round"], plan["guidance"]) == (4, 2, 2, 1.0)
    manifest = json.loads((study / "synthetic" / "manifest.json").read_text())["spec"]
    newest = sorted((study / "distilled" / "checkpoints").glob("step-*.safetensors"))[-1]
    assert manifest["checkpoint_sha256"] == hashlib.sha256(newest.read_bytes()).hexdigest()
    assert (manifest["sampler"], manifest["steps"], manifest["spacing"], manifest["guidance"]) == (
        "ddim", 2, "trailing", 0.0)
    by_cli = tmp_path / "by-cli"
    assert main(["dream", str(study / "distilled"), "--per-class", "2", "--out", str(by_cli), "--seed", "0",
                 "--batch", "8", "--chunk", "8", "--workers", "1"]) == 0
    with np.load(study / "synthetic" / "dataset.npz") as ours, np.load(by_cli / "dataset.npz") as theirs:
        assert np.array_equal(ours["images"], theirs["images"]) and np.array_equal(ours["labels"], theirs["labels"])
    summary = (tmp_path / "runs" / "rule-study" / "summary.md").read_text()
    assert "2-step DDIM student progressively distilled from the generator's 4-step DDIM" in summary
    assert "distill s" in summary
    # re-running finds every stage done: the classifiers' results are not redone
    results = (study / "augment" / "results.jsonl").read_text()
    capsys.readouterr()
    assert main(["study", str(path), *overrides]) == 0
    assert (study / "augment" / "results.jsonl").read_text() == results
