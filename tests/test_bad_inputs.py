"""A corpus of bad inputs, each run through the CLI in-process: exit status 2, one line naming the key, file
or value at fault, and nothing left behind (no new or changed file in the output or run directories).

The cases are issue 15's items 2 (non-finite samples), 3 (nan/inf options and keys), 4 (npz labels), 7
(numeric config values and duplicate YAML keys), 11 (``--out`` naming a file) and 14 (negative guidance,
``evaluate --ref`` with other classes or another image size). ``len(CASES)`` is the count reported in
RELIABILITY.md.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from conftest import TinyFeatures, make_pattern_images
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dreamdata.cli import main
from dreamdata.config import load_config
from dreamdata.training.trainer import train

NAMES = ["hstripes", "vstripes", "square"]


class Case(NamedTuple):
    id: str
    argv: list[str]  # with {placeholders}: the fixture paths of `corpus`, plus {out}, {file}, {tmp}
    needles: list[str]  # each must appear in the one error line


TRAIN = ["train", "tiny", "runs_dir={tmp}/runs", "--dry-run"]  # config cases: built and validated, nothing run
TRAIN_NPZ = ["train", "tiny", "runs_dir={tmp}/runs", "data.per_class=null", "train.steps=1"]


def npz_case(name: str, *needles: str) -> Case:
    return Case(f"npz-{name}", [*TRAIN_NPZ, f"data.dataset=npz:{{{name}}}"], [f"{name}.npz", *needles])


def train_case(override: str, *needles: str, dry_run: bool = True) -> Case:
    key, value = override.split("=", 1)
    argv = TRAIN + [override] if dry_run else [*TRAIN[:-1], override]
    return Case(f"config-{override}" + ("" if dry_run else "-no-dry-run"), argv, [key, *needles])


SAMPLE = ["sample", "{run}", "--n", "1", "--steps", "2", "--device", "cpu", "--out", "{out}"]
DREAM = ["dream", "{run}", "--per-class", "1", "--steps", "2", "--device", "cpu", "--out", "{out}"]
EVALUATE = ["evaluate", "{run}", "--n", "6", "--steps", "2", "--device", "cpu", "--fid-weights", "{extractor}",
            "--out", "{out}/metrics.json"]
INTERPOLATE = ["interpolate", "{run}", "--class", "hstripes", "--frames", "2", "--steps", "2", "--device", "cpu",
               "--out", "{out}/strip.png"]
AUGMENT = ["augment", "--real", "npz:{npz}", "--seeds", "1", "--steps", "1", "--arms", "real", "--out", "{out}"]
CLASSIFIER = ["classifier", "--real", "npz:{npz}", "--steps", "1", "--out", "{out}/c.safetensors"]


def nan_run(argv: list[str]) -> list[str]:
    return [("{nan_run}" if item == "{run}" else item) for item in argv]


CASES = [
    # -- item 3: nan/inf in CLI options (argparse refuses them before anything is loaded)
    Case("sample-guidance-nan", [*SAMPLE, "--guidance", "nan"], ["--guidance", "'nan'", "finite"]),
    Case("sample-guidance-inf", [*SAMPLE, "--guidance", "inf"], ["--guidance", "'inf'", "finite"]),
    Case("sample-eta-nan", [*SAMPLE, "--sampler", "ddim", "--eta", "nan"], ["--eta", "'nan'"]),
    Case("sample-start-noise-inf", [*SAMPLE, "--start-noise", "inf"], ["--start-noise", "'inf'"]),
    Case("dream-guidance-nan", [*DREAM, "--guidance", "nan"], ["--guidance", "'nan'"]),
    Case("dream-keep-top-nan", [*DREAM, "--keep-top", "nan"], ["--keep-top", "'nan'"]),
    Case("evaluate-guidance-nan", [*EVALUATE, "--guidance", "nan"], ["--guidance", "'nan'"]),
    Case("evaluate-start-noise-minus-inf", [*EVALUATE, "--start-noise=-inf"], ["--start-noise", "'-inf'"]),
    Case("interpolate-guidance-inf", [*INTERPOLATE, "--guidance", "inf"], ["--guidance", "'inf'"]),
    Case("augment-lr-nan", [*AUGMENT, "--lr", "nan"], ["--lr", "'nan'"]),
    Case("augment-synthetic-ratio-inf", [*AUGMENT, "--synthetic-ratio", "inf"], ["--synthetic-ratio", "'inf'"]),
    Case("classifier-lr-negative", [*CLASSIFIER, "--lr", "-0.1"], ["--lr", "'-0.1'", "> 0"]),
    # -- item 3: nan/inf in config keys
    train_case("train.lr=.nan", "finite", "nan"),
    train_case("train.lr=inf", "finite", "'inf'"),
    train_case("process.beta_end=.inf", "finite"),
    train_case("evaluation.guidance=nan", "finite"),
    train_case("data.val_fraction=-.inf", "finite"),
    train_case("train.adam_betas=[0.9,.nan]", "finite"),
    Case("config-file-lr-nan", ["train", "{nan_yaml}", "--dry-run"], ["train.lr", "finite"]),
    Case("study-dream-guidance-nan", ["study", "{study_yaml}", "dream.guidance=.nan", "--dry-run"],
         ["dream.guidance", "finite"]),
    # -- item 7: numeric config values, checked when the config is built
    train_case("train.lr=-1", ">= 0", "-1"),
    train_case("train.adam_betas=[0.9,1.0]", "[0, 1)", "1.0"),
    train_case("train.adam_betas=[-0.1,0.999]", "[0, 1)", "-0.1"),
    train_case("process.beta_end=1.5", "0 < beta < 1", "1.5"),
    Case("config-constant_beta=1", [*TRAIN, "process.schedule=constant", "process.constant_beta=1"],
         ["process.constant_beta", "0 < beta < 1", "1.0"]),
    train_case("train.log_every=0", "positive integer", "got 0"),
    train_case("train.val_batches=0", "positive integer", "got 0"),
    train_case("train.sample_steps=0", "positive integer", "got 0"),
    train_case("train.sample_per_class=0", "positive integer", "got 0"),
    train_case("train.checkpoint_every=-1", ">= 0", "-1"),
    train_case("train.keep_checkpoints=-2", ">= 0", "-2"),
    train_case("train.warmup_steps=-5", ">= 0", "-5"),
    train_case("train.grad_clip=-1", ">= 0", "-1"),
    train_case("train.weight_decay=-0.01", ">= 0", "-0.01"),
    train_case("train.log_every=0", "positive integer", dry_run=False),
    train_case("train.sample_steps=0", "positive integer", dry_run=False),
    Case("config-file-duplicate-key", ["train", "{dup_yaml}", "--dry-run"],
         ["dup.yaml", "duplicate key 'lr'", "lines 3 and 5"]),
    Case("config-file-duplicate-section", ["train", "{dup_section_yaml}", "--dry-run"],
         ["dup-section.yaml", "duplicate key 'train'"]),
    Case("study-file-duplicate-key", ["study", "{study_dup_yaml}", "--dry-run"],
         ["study-dup.yaml", "duplicate key 'dataset'"]),
    Case("sweep-bad-shard", ["sweep", "{sweep_yaml}", "--out", "{out}", "--shard", "2/2"], ["--shard", "2/2"]),
    Case("sweep-unknown-metric", ["sweep", "{sweep_yaml}", "--out", "{out}", "--dry-run", "metrics=[fdi]"],
         ["sweep.yaml", "unknown metric 'fdi'"]),
    Case("sweep-negative-guidance", ["sweep", "{sweep_yaml}", "--out", "{out}", "--dry-run", "sampling.guidance=-1"],
         ["sweep.yaml", "guidance -1"]),
    Case("sweep-file-duplicate-key", ["sweep", "{sweep_dup_yaml}", "--out", "{out}", "--dry-run"],
         ["sweep-dup.yaml", "duplicate key 'metrics'"]),
    # -- item 4: npz labels are 0..K-1 and no class is empty
    npz_case("huge-label", "labels must be 0..3", "4 distinct labels", "1000000000"),
    npz_case("huge-label-named", "labels must be 0..2", "3 class_names", "1000000000"),
    npz_case("gap", "labels must be 0..1", "2 distinct labels", "found label(s) 2"),
    npz_case("empty-class", "no images of class(es) ['square']"),
    npz_case("negative", "labels must be >= 0", "-1"),
    npz_case("text", "not an npz file"),
    npz_case("array", "a single .npy array"),
    Case("augment-real-huge-label", [*AUGMENT[:2], "npz:{huge-label}", *AUGMENT[3:]],
         ["huge-label.npz", "1000000000"]),
    # -- item 2: sampling or dreaming a NaN run fails, naming the run and the step, and writes nothing
    Case("sample-nan-run", nan_run(SAMPLE), ["run ", "nan-run", "checkpoint step 2", "NaN/inf", "weights"]),
    Case("sample-grid-nan-run", nan_run(SAMPLE[:-1]) + ["{out}/grid.png"], ["nan-run", "checkpoint step 2"]),
    Case("sample-from-test-nan-run", nan_run(SAMPLE) + ["--from-test", "2"], ["nan-run", "checkpoint step 2"]),
    Case("dream-nan-run", nan_run(DREAM), ["run ", "nan-run", "checkpoint step 2", "NaN/inf"]),
    Case("evaluate-nan-run", nan_run(EVALUATE), ["nan-run", "checkpoint step 2", "NaN/inf"]),
    Case("interpolate-nan-run", nan_run(INTERPOLATE), ["nan-run", "checkpoint step 2", "NaN/inf"]),
    # -- item 11: --out naming an existing file
    Case("sample-out-is-a-file", [*SAMPLE[:-1], "{file}"], ["--out", "a-file.txt", "existing file"]),
    Case("sample-out-png-inside-a-file", [*SAMPLE[:-1], "{file}/grid.png"], ["--out", "a-file.txt", "a file"]),
    Case("dream-out-is-a-file", [*DREAM[:-1], "{file}"], ["--out", "a-file.txt", "existing file"]),
    Case("dream-out-inside-a-file", [*DREAM[:-1], "{file}/set"], ["--out", "a-file.txt", "a file"]),
    # -- item 14: negative guidance; evaluate --ref checked before sampling
    Case("sample-guidance-negative", [*SAMPLE, "--guidance", "-1"], ["--guidance", "'-1'", "w >= 0"]),
    Case("dream-guidance-negative", [*DREAM, "--guidance", "-2"], ["--guidance", "'-2'", "w >= 0"]),
    Case("evaluate-guidance-negative", [*EVALUATE, "--guidance", "-1"], ["--guidance", "w >= 0"]),
    Case("interpolate-guidance-negative", [*INTERPOLATE, "--guidance=-0.5"], ["--guidance", "w >= 0"]),
    train_case("evaluation.guidance=-1", "w >= 0"),
    Case("study-dream-guidance-negative", ["study", "{study_yaml}", "dream.guidance=-1", "--dry-run"],
         ["dream.guidance", "w >= 0"]),
    Case("study-selection-multiple-zero", ["study", "{study_yaml}", "classifier_selection.multiples=[1, 0]",
                                           "--dry-run"], ["classifier_selection.multiples", "positive numbers"]),
    Case("study-selection-heldout-zero", ["study", "{study_yaml}", "classifier_selection.multiples=[1, 2]",
                                          "classifier_selection.heldout_per_class=0", "--dry-run"],
         ["classifier_selection.heldout_per_class", "positive integer"]),
    Case("evaluate-ref-other-classes", [*EVALUATE, "--ref", "npz:{other-classes}"],
         ["'hstripes'", "other-classes.npz", "lacks"]),
    Case("evaluate-samples-ref-other-classes", ["evaluate", "{samples}", "--n", "6", "--fid-weights", "{extractor}",
                                                "--ref", "npz:{other-classes}", "--out", "{out}/m.json"],
         ["'hstripes'", "other-classes.npz", "lacks"]),
    Case("evaluate-ref-other-size", [*EVALUATE, "--ref", "npz:{npz}", "--ref-set", "image_size=16"],
         ["1x8x8", "1x16x16"]),
]


def _nan_weights(checkpoint: Path) -> None:
    with safe_open(str(checkpoint), "pt") as handle:
        metadata = handle.metadata()
    tensors = {name: torch.full_like(t, float("nan")) if t.is_floating_point() else t
               for name, t in load_file(str(checkpoint)).items()}
    save_file(tensors, str(checkpoint), metadata=metadata)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    """Every file the cases name: a tiny trained run and a NaN copy of it, good and bad npz files, YAML files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    images, labels = make_pattern_images(per_class=4)
    names = np.array(NAMES)
    paths: dict[str, Path] = {"npz": root / "tiny.npz"}
    np.savez(paths["npz"], images=images, labels=labels, class_names=names)
    run = train(load_config("tiny", [f"data.dataset=npz:{paths['npz']}", f"runs_dir={root / 'runs'}",
                                     "data.per_class=null", "train.steps=2", "train.sample_grid=false",
                                     "train.checkpoint_every=0", "train.val_every=0"])).run_dir
    paths["run"] = run
    paths["nan_run"] = root / "runs" / "nan-run"
    shutil.copytree(run, paths["nan_run"])
    _nan_weights(next((paths["nan_run"] / "checkpoints").glob("*.safetensors")))

    huge = labels.copy()
    huge[-1] = 10**9
    bad_npz = {
        "huge-label": dict(images=images, labels=huge),
        "huge-label-named": dict(images=images, labels=huge, class_names=names),
        "gap": dict(images=images[labels != 1], labels=labels[labels != 1]),  # labels 0 and 2
        "empty-class": dict(images=images[labels < 2], labels=labels[labels < 2], class_names=names),
        "negative": dict(images=images, labels=labels - 1),
        "other-classes": dict(images=images, labels=labels, class_names=np.array(["cat", "dog", "emu"])),
    }
    for name, arrays in bad_npz.items():
        paths[name] = root / f"{name}.npz"
        np.savez(paths[name], **arrays)
    paths["text"] = root / "text.npz"
    paths["text"].write_text("images,labels\n1,2\n")
    paths["array"] = root / "array.npz"
    with open(paths["array"], "wb") as handle:
        np.save(handle, images)
    paths["samples"] = root / "samples.npz"  # what `dreamdata sample` writes
    np.savez(paths["samples"], images=images, labels=labels, class_names=names)
    paths["extractor"] = root / "tiny-extractor.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, TorchScript files are not
        torch.jit.script(TinyFeatures()).save(str(paths["extractor"]))

    yaml_files = {
        "nan_yaml": ("nan.yaml", "train:\n  lr: .nan\n"),
        "dup_yaml": ("dup.yaml", "name: dup\ntrain:\n  lr: 1.0e-3\n  steps: 5\n  lr: 2.0e-3\n"),
        "dup_section_yaml": ("dup-section.yaml", "train:\n  lr: 1.0e-3\ntrain:\n  steps: 5\n"),
        "study_yaml": ("study.yaml", "name: s\n"),
        "study_dup_yaml": ("study-dup.yaml", "real:\n  dataset: mnist\n  dataset: fashion-mnist\n"),
        "sweep_yaml": ("sweep.yaml", "base: tiny\n"),
        "sweep_dup_yaml": ("sweep-dup.yaml", "base: tiny\nmetrics: [fid]\nmetrics: [kid]\n"),
    }
    for key, (name, text) in yaml_files.items():
        paths[key] = root / name
        paths[key].write_text(text)
    return {key: str(path) for key, path in paths.items()} | {"root": str(root)}


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file (hidden ones too) under ``folders``: path -> (size, mtime)."""
    files = {}
    for folder in folders:
        for directory, _, names in os.walk(folder):
            for name in names:
                path = Path(directory) / name
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
            files[directory] = (0, 0)
    return files


def run_cli(argv: list[str]) -> int:
    """``main(argv)``'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def error_lines(stderr: str) -> list[str]:
    """stderr without progress-bar redraws (tqdm writes ``\\r``-separated frames while sampling)."""
    frames = re.split(r"[\r\n]", stderr)
    return [frame for frame in frames if frame.strip() and not re.search(r"\d+%\|", frame)]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_leaves_nothing(case, corpus, tmp_path, capsys):
    (tmp_path / "a-file.txt").write_text("not a directory\n")
    values = corpus | {"out": str(tmp_path / "out"), "file": str(tmp_path / "a-file.txt"), "tmp": str(tmp_path)}
    argv = [item.format(**values) for item in case.argv]
    before = snapshot(tmp_path, Path(corpus["root"]))
    capsys.readouterr()

    status = run_cli(argv)

    stderr = capsys.readouterr().err
    lines = error_lines(stderr)
    assert status == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"dreamdata {argv[0]}: error: "), lines[0]
    for needle in case.needles:
        assert needle.format(**values) in lines[0], (needle, lines[0])
    assert snapshot(tmp_path, Path(corpus["root"])) == before


def test_the_corpus_counts_its_cases():
    """RELIABILITY.md reports these counts; every case is distinct."""
    assert len({case.id for case in CASES}) == len(CASES) == 72


# -- what the exit status alone cannot show ------------------------------------------------------------


def test_evaluate_refuses_a_reference_of_other_classes_or_size_before_sampling(corpus, tmp_path, monkeypatch,
                                                                              capsys):
    import dreamdata.evaluation.generated
    import dreamdata.evaluation.suite

    def must_not_run(*args, **kwargs):
        raise AssertionError("sampled or extracted features before checking the reference")

    monkeypatch.setattr(dreamdata.evaluation.generated, "sample_for_evaluation", must_not_run)
    monkeypatch.setattr(dreamdata.evaluation.suite, "extract_features", must_not_run)
    out = str(tmp_path / "m.json")
    common = ["--n", "6", "--fid-weights", corpus["extractor"], "--out", out]
    assert main(["evaluate", corpus["run"], "--ref", f"npz:{corpus['other-classes']}", *common]) == 2
    assert main(["evaluate", corpus["run"], "--ref", f"npz:{corpus['npz']}", "--ref-set", "image_size=16",
                 *common]) == 2
    assert main(["evaluate", corpus["samples"], "--ref", f"npz:{corpus['other-classes']}", *common]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all("lacks" in line or "1x16x16" in line for line in errors)


def test_json_records_write_null_and_a_flag_for_non_finite_numbers(tmp_path):
    import json

    from dreamdata.finite_json import dumps, restore
    from dreamdata.training.run_dir import log_metrics, read_metrics

    record = {"step": 5, "loss": float("nan"), "val": float("-inf"), "ok": 0.5,
              "per_t": [1.0, float("inf")], "nested": {"fid": float("nan")}}
    text = dumps(record)

    def refuse(token):
        raise ValueError(f"bare {token} in JSON")

    parsed = json.loads(text, parse_constant=refuse)  # strict JSON: no NaN / Infinity tokens
    assert parsed == {"step": 5, "loss": None, "loss_nonfinite": "nan", "val": None, "val_nonfinite": "-inf",
                      "ok": 0.5, "per_t": [1.0, None], "per_t_nonfinite": [None, "inf"],
                      "nested": {"fid": None, "fid_nonfinite": "nan"}}
    back = restore(parsed)
    assert back.keys() == record.keys() and back["val"] == float("-inf") and back["per_t"] == [1.0, float("inf")]
    assert np.isnan(back["loss"]) and np.isnan(back["nested"]["fid"]) and back["ok"] == 0.5

    log_metrics(tmp_path, {"step": 1, "loss": float("nan")})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=refuse) == {"step": 1, "loss": None, "loss_nonfinite": "nan"}
    (logged,) = read_metrics(tmp_path)
    assert logged["step"] == 1 and np.isnan(logged["loss"])


def test_shipped_configs_name_no_absolute_data_path():
    """A config shipped with the project must work on any machine: datasets by name, or paths relative to it."""
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("configs/*.yaml"), *root.glob("benchmarks/*.yaml"), *root.glob("src/dreamdata/presets/*.yaml")]
    assert files
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not re.search(r"(zip|npz|folder):\s*[/~]", code), f"{path.name}:{number}: {line.strip()}"


def test_the_edges_of_each_range_are_still_accepted():
    """The checks refuse only what is meaningless: 0 still disables clipping, warmup, checkpoints and rotation."""
    config = load_config("tiny", ["train.lr=0", "train.grad_clip=0", "train.warmup_steps=0", "train.weight_decay=0",
                                  "train.checkpoint_every=0", "train.keep_checkpoints=0", "train.val_every=0",
                                  "train.adam_betas=[0,0.999999]", "train.log_every=1", "train.val_batches=1",
                                  "train.sample_steps=1", "train.sample_per_class=1", "process.beta_end=0.999",
                                  "evaluation.guidance=0"])
    assert (config.train.lr, config.train.grad_clip, config.train.adam_betas) == (0.0, 0.0, [0.0, 0.999999])
