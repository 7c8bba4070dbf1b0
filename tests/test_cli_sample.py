"""`dreamdata sample` and `dreamdata interpolate` end to end on a tiny trained run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_pattern_images
from PIL import Image

from dreamdata.cli import main
from dreamdata.config import load_config
from dreamdata.sampling.generate import TrajectoryRecorder
from dreamdata.training.trainer import train

CLASS_NAMES = ["hstripes", "vstripes", "square"]
PAD = 2  # grid padding (pixels)


def _train(tmp_path_factory, name: str, extra: list[str]):
    folder = tmp_path_factory.mktemp(name)
    images, labels = make_pattern_images(per_class=8)
    npz = folder / "tiny.npz"
    np.savez(npz, images=images, labels=labels, class_names=np.array(CLASS_NAMES))
    overrides = [f"data.dataset=npz:{npz}", f"runs_dir={folder / 'runs'}", "data.per_class=null",
                 "train.steps=10", "train.sample_grid=false", "train.checkpoint_every=0", "train.val_every=0",
                 *extra]
    return train(load_config("tiny", overrides)).run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train(tmp_path_factory, "conditional", [])


@pytest.fixture(scope="module")
def unconditional_run(tmp_path_factory):
    return _train(tmp_path_factory, "unconditional", ["model.class_conditional=false", "train.steps=2"])


def grid_shape(rows: int, columns: int, size: int = 8) -> tuple[int, int]:
    """(height, width) of a make_grid image of rows x columns cells of size x size with PAD padding."""
    return rows * (size + PAD) + PAD, columns * (size + PAD) + PAD


def png_text(path) -> dict:
    with Image.open(path) as image:
        return dict(image.text)


def test_sample_writes_grid_pngs_npz_and_json(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", str(run_dir), "--n", "3", "--steps", "4", "--sampler", "ddim", "--eta", "0.5",
                 "--guidance", "1", "--seed", "5", "--batch", "4", "--device", "cpu", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out / "grid.png") as grid:
        assert (grid.height, grid.width) == grid_shape(3, 3) and grid.mode == "L"
    for name in CLASS_NAMES:
        assert sorted(p.name for p in (out / name).iterdir()) == ["0000.png", "0001.png", "0002.png"]
    with np.load(out / "samples.npz") as stored:
        assert stored["images"].shape == (9, 8, 8, 1) and stored["images"].dtype == np.uint8
        assert stored["labels"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert stored["class_names"].tolist() == CLASS_NAMES
        assert stored["indices"].tolist() == [0, 3, 6, 1, 4, 7, 2, 5, 8]  # k * num_classes + class
        with Image.open(out / "vstripes" / "0002.png") as single:
            assert np.array_equal(np.asarray(single), stored["images"][5, :, :, 0])
    record = json.loads((out / "sample.json").read_text())
    assert record["sampler"] == "ddim" and record["eta"] == 0.5 and record["seed"] == 5
    assert record["steps"] == 4 and record["guidance"] == 1.0 and record["step"] == 10
    assert record["checkpoint"].endswith(".safetensors") and record["classes"] == CLASS_NAMES
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_sample_class_subset_matches_the_full_run_and_default_out(run_dir, tmp_path):
    full, subset = tmp_path / "full", tmp_path / "subset"
    common = ["--steps", "3", "--device", "cpu", "--seed", "2"]
    assert main(["sample", str(run_dir), "--n", "2", *common, "--out", str(full)]) == 0
    assert main(["sample", str(run_dir), "--n", "1", "--class", "square,0", "--batch", "1", *common,
                 "--out", str(subset)]) == 0
    with np.load(full / "samples.npz") as a, np.load(subset / "samples.npz") as b:
        assert b["labels"].tolist() == [2, 0]
        # the same seed gives the same samples whatever --n, --class and --batch (to float rounding)
        difference = np.abs(b["images"].astype(int) - a["images"][[4, 0]].astype(int))
        assert difference.max() <= 1
    with Image.open(subset / "grid.png") as grid:
        assert (grid.height, grid.width) == grid_shape(2, 1)
    assert sorted(p.name for p in subset.iterdir() if p.is_dir()) == ["hstripes", "square"]
    # default output directory: RUN/samples/<descriptive name>/
    assert main(["sample", str(run_dir), "--n", "1", "--class", "1", *common]) == 0
    made = [p for p in (run_dir / "samples").iterdir() if (p / "grid.png").is_file()]
    assert [p.name for p in made] == ["ddpm-3steps-w0-seed2-step10-classes1"]


def test_unknown_class_is_a_one_line_error_naming_it_and_the_known_classes(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--class", "square", "--class", "circle", "--steps", "2",
                 "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("dreamdata sample: error:")
    assert "'circle'" in error and all(name in error for name in CLASS_NAMES)
    assert not (tmp_path / "x").exists()


def test_sample_trajectory_and_forward_strips(run_dir, tmp_path):
    out = tmp_path / "strips"
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "7", "--class", "hstripes,square",
                 "--trajectory", "3", "--forward-strip", "5", "--device", "cpu", "--out", str(out)]) == 0
    trajectory = png_text(out / "trajectory.png")
    columns = TrajectoryRecorder.columns(3, 7)  # steps 0, 3, 6
    assert columns == 3
    assert trajectory["dreamdata:columns"] == str(columns) and trajectory["dreamdata:rows"] == "4"  # 2 per class
    assert trajectory["dreamdata:column_labels"].split(",")[0] == "t=49"
    assert trajectory["dreamdata:column_labels"].split(",")[-1] == "t=0"
    forward = png_text(out / "forward.png")
    assert forward["dreamdata:columns"] == "6" and forward["dreamdata:rows"] == "2"  # x_0 + 5 noise levels
    assert forward["dreamdata:column_labels"] == "x_0,t=0,t=12,t=24,t=37,t=49"
    assert json.loads((out / "sample.json").read_text())["files"] == [
        "grid.png", "samples.npz", "trajectory.png", "forward.png"]


def test_unconditional_model_ignores_class_and_refuses_guidance(unconditional_run, tmp_path, capsys):
    out = tmp_path / "u"
    assert main(["sample", str(unconditional_run), "--n", "3", "--steps", "2", "--class", "square",
                 "--out", str(out)]) == 0
    assert "--class is ignored" in capsys.readouterr().err
    with np.load(out / "samples.npz") as stored:
        assert stored["images"].shape == (3, 8, 8, 1) and stored["labels"].tolist() == [-1, -1, -1]
    assert len(list((out / "unconditional").iterdir())) == 3
    assert main(["sample", str(unconditional_run), "--guidance", "2", "--out", str(out)]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_interpolate_is_deterministic_and_its_ends_are_plain_ddim_samples(run_dir, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    args = ["interpolate", str(run_dir), "--class", "vstripes", "--frames", "4", "--seed", "3", "--seed2", "8",
            "--steps", "5", "--guidance", "1", "--device", "cpu"]
    assert main([*args, "--out", str(first)]) == 0
    assert main([*args, "--out", str(second)]) == 0
    with Image.open(first) as a, Image.open(second) as b:
        strip = np.asarray(a)
        assert strip.shape == grid_shape(1, 4) and np.array_equal(strip, np.asarray(b))
    ends = tmp_path / "ends"
    for seed in ("3", "8"):  # the first vstripes sample of each seed, with deterministic DDIM
        assert main(["sample", str(run_dir), "--class", "vstripes", "--n", "1", "--sampler", "ddim", "--steps",
                     "5", "--guidance", "1", "--seed", seed, "--device", "cpu", "--out", str(ends / seed)]) == 0
    cell = lambda k: strip[PAD:PAD + 8, PAD + k * (8 + PAD):PAD + k * (8 + PAD) + 8].astype(int)  # noqa: E731
    for k, seed in ((0, "3"), (3, "8")):
        with np.load(ends / seed / "samples.npz") as stored:
            assert np.abs(cell(k) - stored["images"][0, :, :, 0].astype(int)).max() <= 1
    # between classes, with the noise fixed
    classes = tmp_path / "c.png"
    assert main(["interpolate", str(run_dir), "--class", "0", "--to-class", "square", "--frames", "3",
                 "--steps", "4", "--device", "cpu", "--out", str(classes)]) == 0
    with Image.open(classes) as image:
        assert image.size == (grid_shape(1, 3)[1], grid_shape(1, 3)[0])
