"""Dreaming datasets: manifest, resume after an interruption, sharding, filtering, and bad synthetic input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_pattern_images

from dreamdata.cli import main
from dreamdata.config import load_config
from dreamdata.data.image_data import ImageData
from dreamdata.dream.filtering import keep_top_per_class
from dreamdata.dream.load import load_synthetic
from dreamdata.errors import DataError
from dreamdata.training.trainer import train

NAMES = ["hstripes", "vstripes", "square"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A class-conditional tiny model (5 training steps) on the 3-class pattern data, and that data's npz."""
    root = tmp_path_factory.mktemp("dream")
    images, labels = make_pattern_images(per_class=16)
    npz = root / "tiny.npz"
    np.savez(npz, images=images, labels=labels, class_names=np.array(NAMES))
    config = load_config("tiny", [f"data.dataset=npz:{npz}", f"runs_dir={root / 'runs'}", "data.per_class=null",
                                  "train.steps=5", "train.sample_grid=false"])
    return train(config).run_dir, npz


def dream(run, out, *extra) -> int:
    return main(["dream", str(run), "--per-class", "5", "--out", str(out), "--steps", "3", "--chunk", "4",
                 "--batch", "3", "--device", "cpu", "--guidance", "1.5", *extra])


def png_hashes(folder: Path) -> dict[str, str]:
    """The dataset's images: PNGs in its class folders (hidden ones, like the report's, are no class)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("*/*.png")) if not p.parent.name.startswith(".")}


def test_dream_writes_dataset_and_manifest_and_resumes_exactly(tiny_run, tmp_path):
    run, _ = tiny_run
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert dream(run, whole) == 0
    manifest = json.loads((whole / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["counts"] == {name: 5 for name in NAMES} and manifest["total"] == 15
    spec = manifest["spec"]
    checkpoint = Path(spec["checkpoint"])
    assert spec["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (spec["sampler"], spec["steps"], spec["guidance"], spec["seed"], spec["per_class"]) == ("ddim", 3, 1.5, 0, 5)
    assert manifest["seconds"] > 0
    assert sorted(p.name for p in whole.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(NAMES)

    # interrupted after 1 chunk, then after one more, then finished: same images, none lost or duplicated
    assert dream(run, parts, "--max-chunks", "1") == 0
    assert json.loads((parts / "manifest.json").read_text())["status"] == "incomplete"
    assert len(list((parts / ".chunks").glob("chunk-*.npz"))) == 1
    assert dream(run, parts, "--max-chunks", "1") == 0
    assert len(list((parts / ".chunks").glob("chunk-*.npz"))) == 2
    assert dream(run, parts) == 0
    assert json.loads((parts / "manifest.json").read_text())["status"] == "complete"
    hashes = png_hashes(parts)
    assert len(hashes) == 15 and hashes == png_hashes(whole)
    a, b = np.load(whole / "dataset.npz"), np.load(parts / "dataset.npz")
    for key in ("images", "labels", "indices", "class_names"):
        assert np.array_equal(a[key], b[key]), key
    assert sorted(a["indices"].tolist()) == sorted(set(a["indices"].tolist()))  # no duplicate image
    assert not [p for p in parts.rglob("*") if p.name.endswith(".tmp")]
    # a finished set is not redone
    assert dream(run, parts) == 0 and png_hashes(parts) == hashes


def test_a_larger_per_class_grows_the_set_into_the_one_dreamed_at_once(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    grown, direct = tmp_path / "grown", tmp_path / "direct"
    assert dream(run, grown) == 0  # 5 per class = 15 images: chunks of 4, 4, 4 and a partial 3
    first = png_hashes(grown)
    chunk_times = {p.name: p.stat().st_mtime_ns for p in sorted((grown / ".chunks").glob("*.npz"))}
    # growing to 8 per class, interrupted after one new chunk, then finished
    assert dream(run, grown, "--per-class", "8", "--max-chunks", "1") == 0
    manifest = json.loads((grown / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["spec"]["per_class"] == 8
    assert not (grown / "dataset.npz").exists() and not png_hashes(grown)  # the old assembled files are gone
    assert dream(run, grown, "--per-class", "8") == 0
    assert dream(run, direct, "--per-class", "8") == 0
    hashes = png_hashes(grown)
    assert len(hashes) == 24 and hashes == png_hashes(direct)
    assert all(hashes[name] == digest for name, digest in first.items())  # the first 5 per class are unchanged
    a, b = np.load(grown / "dataset.npz"), np.load(direct / "dataset.npz")
    for key in ("images", "labels", "indices"):
        assert np.array_equal(a[key], b[key]), key
    kept = {name: (grown / ".chunks" / name).stat().st_mtime_ns for name in chunk_times}
    assert [name for name in chunk_times if kept.get(name) == chunk_times[name]] == [
        "chunk-000000.npz", "chunk-000001.npz", "chunk-000002.npz"]  # full chunks were not dreamed again
    assert json.loads((grown / "manifest.json").read_text())["counts"] == {name: 8 for name in NAMES}
    capsys.readouterr()
    assert dream(run, grown, "--per-class", "6") == 2  # shrinking would drop images: an error, not a rewrite
    assert "per_class: 8 -> 6" in capsys.readouterr().err
    assert dream(run, grown, "--per-class", "9", "--seed", "1") == 2  # growing and changing the seed: an error
    assert "seed: 0 -> 1" in capsys.readouterr().err


def test_rerun_with_other_arguments_or_model_is_a_clear_error(tiny_run, tmp_path, capsys):
    run, npz = tiny_run
    out = tmp_path / "set"
    assert dream(run, out, "--max-chunks", "1") == 0
    capsys.readouterr()
    assert dream(run, out, "--seed", "1") == 2
    assert "seed: 0 -> 1" in capsys.readouterr().err
    other = load_config("tiny", [f"data.dataset=npz:{npz}", f"runs_dir={tmp_path / 'runs'}", "data.per_class=null",
                                 "train.steps=3", "train.sample_grid=false"])
    assert dream(train(other).run_dir, out) == 2
    assert "checkpoint_sha256" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    assert dream(run, tmp_path / "busy") == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_sharded_generation_equals_single_process(tiny_run, tmp_path):
    run, _ = tiny_run
    single = tmp_path / "single"
    assert dream(run, single) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dreamdata",
               "dream", str(run), "--per-class", "5", "--out", str(tmp_path / "sharded"), "--steps", "3",
               "--chunk", "4", "--batch", "3", "--device", "cpu", "--guidance", "1.5"]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    manifest = json.loads((tmp_path / "sharded" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["world_size"] == 2
    assert png_hashes(tmp_path / "sharded") == png_hashes(single)
    a, b = np.load(single / "dataset.npz"), np.load(tmp_path / "sharded" / "dataset.npz")
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])


def test_keep_top_per_class_keeps_the_most_confident():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.8, 0.2, 0.7, 0.3])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    assert keep_top_per_class(scores, labels, 0.5).tolist() == [0, 2, 3, 5]  # ceil(1.5)=2 of 0, 2 of 1
    assert keep_top_per_class(scores, labels, 1.0).tolist() == list(range(7))


def test_dream_filtered_by_a_classifier(tiny_run, tmp_path):
    run, npz = tiny_run
    classifier = tmp_path / "clf.safetensors"
    assert main(["classifier", "--real", f"npz:{npz}", "--steps", "5", "--batch-size", "16", "--device", "cpu",
                 "--out", str(classifier)]) == 0
    out = tmp_path / "filtered"
    assert dream(run, out, "--keep-top", "0.4", "--filter-classifier", str(classifier)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {name: 2 for name in NAMES}  # ceil(0.4 * 5)
    assert manifest["filter"]["kept"] == 6 and manifest["filter"]["dreamed"] == 15
    assert manifest["filter"]["mean_confidence_kept"] >= manifest["filter"]["mean_confidence_all"]
    assert manifest["spec"]["keep_top"] == 0.4 and len(png_hashes(out)) == 6
    # recompute p(label | x) for every dreamed image (the same dream unfiltered, the classifier run by hand)
    # and check that exactly the 2 most probable of each class were kept
    from dreamdata.classify.checkpoint import load_classifier

    assert dream(run, tmp_path / "unfiltered") == 0
    everything = np.load(tmp_path / "unfiltered" / "dataset.npz")
    loaded = load_classifier(classifier)
    with torch.no_grad():
        x = torch.from_numpy(everything["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        probabilities = loaded.network.eval()(x).softmax(dim=1).double()
    columns = [loaded.class_names.index(name) for name in NAMES]
    p_label = [float(probabilities[i, columns[label]]) for i, label in enumerate(everything["labels"])]
    expected = set()
    for label in range(len(NAMES)):
        members = sorted((i for i, y in enumerate(everything["labels"]) if y == label), key=lambda i: -p_label[i])
        assert len(members) == 5 and p_label[members[1]] > p_label[members[2]] + 1e-6  # no tie at the cut
        expected |= {int(everything["indices"][i]) for i in members[:2]}
    kept = np.load(out / "dataset.npz")
    assert set(kept["indices"].tolist()) == expected
    kept_rows = [i for i, index in enumerate(everything["indices"]) if int(index) in expected]
    assert manifest["filter"]["mean_confidence_kept"] == pytest.approx(np.mean([p_label[i] for i in kept_rows]),
                                                                       abs=1e-5)
    assert manifest["filter"]["mean_confidence_all"] == pytest.approx(np.mean(p_label), abs=1e-5)


# -- bad synthetic input --------------------------------------------------------------------------


def _real() -> ImageData:
    images, labels = make_pattern_images(per_class=4)
    return ImageData(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels), list(NAMES), "real")


def _write_folder(root: Path, classes: dict[str, int], size: int = 8, mode: str = "L") -> Path:
    from PIL import Image

    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            Image.new(mode, (size, size), color=k * 20 if mode == "L" else (k, 0, 0)).save(root / name / f"{k}.png")
    return root


def test_synthetic_folder_is_relabelled_by_class_name(tmp_path):
    folder = _write_folder(tmp_path / "syn", {"square": 2, "hstripes": 3, "vstripes": 1})
    synthetic, manifest = load_synthetic(folder, _real())
    assert manifest is None
    assert synthetic.class_names == NAMES
    assert torch.bincount(synthetic.labels).tolist() == [3, 1, 2]


def test_bad_synthetic_sets_give_errors_naming_what_differs(tiny_run, tmp_path):
    real = _real()
    with pytest.raises(DataError, match=r"missing \['square'\].*not in the real data \['circle'\]"):
        load_synthetic(_write_folder(tmp_path / "a", {"hstripes": 1, "vstripes": 1, "circle": 1}), real)
    with pytest.raises(DataError, match="1-channel 16x16, the real images 1-channel 8x8"):
        load_synthetic(_write_folder(tmp_path / "b", dict.fromkeys(NAMES, 1), size=16), real)
    with pytest.raises(DataError, match="3-channel 8x8"):
        load_synthetic(_write_folder(tmp_path / "c", dict.fromkeys(NAMES, 1), mode="RGB"), real)
    empty = _write_folder(tmp_path / "d", {"hstripes": 1, "vstripes": 1})
    (empty / "square").mkdir()
    with pytest.raises(DataError, match="square.*no images"):
        load_synthetic(empty, real)
    images, labels = make_pattern_images(per_class=2)
    np.savez(tmp_path / "e.npz", images=images[labels < 2], labels=labels[labels < 2], class_names=np.array(NAMES))
    with pytest.raises(DataError, match=r"no images of class\(es\) \['square'\]"):
        load_synthetic(tmp_path / "e.npz", real)

    run, _ = tiny_run
    out = tmp_path / "dreamed"
    assert dream(run, out) == 0
    with pytest.raises(DataError, match="not by the expected model"):
        load_synthetic(out, real, expect_checkpoint_sha256="0" * 64)
    assert len(load_synthetic(out, real)[0]) == 15
    assert dream(run, tmp_path / "half", "--max-chunks", "1") == 0
    with pytest.raises(DataError, match="incomplete"):
        load_synthetic(tmp_path / "half", real)


def test_a_finished_set_gains_a_format_asked_for_later(tiny_run, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "set"
    assert dream(run, out, "--format", "folder") == 0
    assert not (out / "dataset.npz").exists() and len(png_hashes(out)) == 15
    assert dream(run, out, "--format", "npz") == 0  # no image is dreamed again: assembled from the chunks
    assert np.load(out / "dataset.npz")["images"].shape == (15, 8, 8, 1)
    assert (out / "preview.png").is_file()


def test_a_crash_mid_run_loses_and_duplicates_nothing(tiny_run, tmp_path, monkeypatch):
    """Interrupt inside the second chunk (as Ctrl-C would), then re-run: the set equals an uninterrupted one."""
    from dreamdata.dream import writer

    run, _ = tiny_run
    real_generate = writer.generate
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(writer, "generate", interrupted)
    out = tmp_path / "crashed"
    assert dream(run, out) == 130
    assert [p.name for p in (out / ".chunks").iterdir()] == ["chunk-000000.npz"]  # nothing half-written
    monkeypatch.setattr(writer, "generate", real_generate)
    assert dream(run, out) == 0
    assert dream(run, tmp_path / "whole") == 0
    assert png_hashes(out) == png_hashes(tmp_path / "whole") and len(png_hashes(out)) == 15


def test_a_dreamed_set_can_be_evaluated_against_the_real_data(tiny_run, tmp_path, tiny_extractor_file, monkeypatch):
    run, npz = tiny_run
    monkeypatch.setenv("DREAMDATA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "dreamed"
    assert dream(run, out) == 0
    assert main(["evaluate", str(out), "--ref", f"npz:{npz}", "--fid-weights", str(tiny_extractor_file),
                 "--metrics", "fid", "--n", "15"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["n_samples"] == 15 and sorted(result["fid_per_class"]) == sorted(NAMES)
    assert "dataset.npz" in result["samples"]


def test_the_report_page_leaves_a_dreamed_set_a_clean_image_folder(tmp_path):
    """`dream` writes report.html into the dataset; its figures must not read as an extra class when the
    set is loaded as `folder:DIR` (the folder loader takes every visible sub-folder as a class)."""
    from dreamdata.config import DataConfig
    from dreamdata.data import load_dataset
    from dreamdata.reports.html.page import Page

    for name in ("cat", "dog"):
        (tmp_path / "set" / name).mkdir(parents=True)
        from PIL import Image

        Image.new("L", (4, 4), 128).save(tmp_path / "set" / name / "0.png")
    Page(tmp_path / "set" / "report.html", "t").drawn("view.png").write_bytes(b"")
    data = load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'set'}", val_fraction=0.0), "train")
    assert data.class_names == ["cat", "dog"]
