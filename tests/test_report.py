"""`dreamdata report` on real tiny directories of every kind: the sections each page must have, every image
it references exists, numbers that match the directory (worked out here independently), deterministic
regeneration, and directories with missing pieces reported instead of failing."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import statistics
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dreamdata.cli import main
from dreamdata.errors import DreamdataError
from dreamdata.reports.html import detect_kind, write_report, write_report_or_warn
from dreamdata.reports.html.views import labelled_view
from dreamdata.sampling.grid import save_grid

SECTIONS = {"run": ["overview", "config", "curves", "metrics", "samples", "checkpoints", "reproduce"],
            "gan": ["overview", "config", "curves", "metrics", "samples", "checkpoints", "reproduce"],
            "study": ["overview", "k4"], "augment": ["accuracy"],
            "sweep": ["results", "figures", "mosaics", "arms"], "dream": ["manifest", "counts", "mosaic", "filter"]}


class Parsed(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.links = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag in ("a", "link", "script"):
            self.links.append(attrs.get("href") or attrs.get("src") or "")


def parse(page: Path) -> Parsed:
    parsed = Parsed()
    parsed.feed(page.read_text())
    return parsed


def referenced_files(page: Path) -> list[Path]:
    return [page.parent / unquote(src) for src in parse(page).images]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SECTIONS))
def test_each_page_has_its_sections_and_every_image_exists(report_dirs, kind):
    directory = report_dirs[kind]
    assert detect_kind(directory) == ("run" if kind == "gan" else kind)
    page = write_report(directory)
    assert page == directory / "report.html"
    parsed = parse(page)
    assert set(SECTIONS[kind]) <= set(parsed.sections), parsed.sections
    assert parsed.images, "a page without a figure"
    for path in referenced_files(page):
        assert path.is_file(), path
    text = page.read_text()
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)  # offline, no CDN
    assert all(not link or link.startswith("#") or (page.parent / unquote(link)).exists() for link in parsed.links)


@pytest.mark.slow
def test_run_page_numbers_come_from_the_run(report_dirs):
    from dreamdata.training.pretrained import load_trained

    run = report_dirs["run"]
    text = write_report(run).read_text()
    network = load_trained(run).network
    assert f"{sum(p.numel() for p in network.parameters()):,} parameters" in text
    steps = sorted(int(p.name[5:14]) for p in (run / "checkpoints").glob("step-*.safetensors"))
    assert steps and all(f'<td class="num">{step}</td>' in text for step in steps)
    assert f"{run / 'config.yaml'} --run-dir" in text  # the command that reproduces it
    assert "hstripes, vstripes, square" in text and "class-conditional True" in text
    # the grid is shown upscaled to >= 64 px per 28-px image, with the raw grid left as it was
    raw = next((run / "samples").glob("grid-*.png"))
    view = next((run / ".report-files").glob("run-grid-*@view.png"))
    assert Image.open(view).size[1] == Image.open(raw).size[1] * 3  # ceil(64 / 28) = 3
    gan_text = write_report(report_dirs["gan"]).read_text()
    assert "GAN" in gan_text and "generator" in gan_text


@pytest.mark.slow
def test_study_page_shows_what_its_results_say(report_dirs):
    study = report_dirs["study"]
    text = write_report(study).read_text()
    records = [json.loads(line) for line in (study / "K4" / "augment" / "results.jsonl").read_text().splitlines()]
    by_arm = {}
    for record in records:
        by_arm.setdefault(record["arm"], {})[record["seed"]] = record["accuracy"]
    for arm, accuracies in by_arm.items():
        values = [accuracies[seed] for seed in sorted(accuracies)]
        assert f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}" in text, arm
    seeds = sorted(by_arm["real"])
    difference = statistics.mean(by_arm["synthetic"][s] - by_arm["real"][s] for s in seeds)
    assert f"{100 * difference:.2f}" in text
    assert "k4-forest.png" in text and "confusion-real_synthetic.png" in text and "k4-preview@view.png" in text


@pytest.mark.slow
def test_dream_page_counts_the_images_in_the_set(report_dirs):
    dream = report_dirs["dream"]
    text = write_report(dream).read_text()
    for name in ("hstripes", "vstripes", "square"):
        count = len(list((dream / name).glob("*.png")))
        assert f'<tr><td>{name}</td><td class="num">{count}</td></tr>' in text
    assert "Not filtered" in text


def test_labelled_view_repeats_every_pixel_and_leaves_the_raw_grid(tmp_path):
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    raw = save_grid(images, tmp_path / "grid.png", nrow=3)  # two rows of three
    before = hashlib.sha256(raw.read_bytes()).hexdigest()
    view = labelled_view(raw, tmp_path / "view.png", cell=8, row_labels=["first", "second"])
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == before
    original = np.asarray(Image.open(raw).convert("RGB"))
    shown = np.asarray(Image.open(view).convert("RGB"))
    factor = 8  # 64 px / 8 px
    assert shown.shape[0] == original.shape[0] * factor
    pixels = shown[:, shown.shape[1] - original.shape[1] * factor:]
    assert np.array_equal(pixels, np.kron(original, np.ones((factor, factor, 1), dtype=np.uint8)))
    labels = shown[:, : shown.shape[1] - original.shape[1] * factor]
    assert labels.shape[1] > 0 and (labels < 128).any()  # the row names are drawn


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["run", "study", "sweep"])
def test_regenerating_a_report_gives_the_same_bytes(report_dirs, kind):
    page = write_report(report_dirs[kind])

    def snapshot():
        files = sorted(page.parent.joinpath(".report-files").glob("*"))
        return page.read_bytes(), {path.name: path.read_bytes() for path in files}

    first = snapshot()
    write_report(report_dirs[kind])
    assert snapshot() == first


def copy_of(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / directory.name
    shutil.copytree(directory, target, ignore=shutil.ignore_patterns("report*"))
    return target


@pytest.mark.slow
def test_an_interrupted_run_says_what_is_missing(report_dirs, tmp_path):
    run = copy_of(report_dirs["run"], tmp_path)
    for path in (run / "checkpoints").glob("step-000000006.*"):
        path.unlink()
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"step": 3, "name": "step-000000003"}))
    shutil.rmtree(run / "samples")
    text = write_report(run).read_text()
    assert "unfinished: the newest checkpoint is step 3 of a 6-step budget" in text
    assert f"dreamdata train --resume {run}" in text and "no sample grid" in text
    starting = copy_of(report_dirs["run"], tmp_path / "starting")
    shutil.rmtree(starting / "checkpoints")
    shutil.rmtree(starting / "samples")
    (starting / "metrics.jsonl").unlink()
    text = write_report(starting).read_text()
    assert "no checkpoint yet" in text and "has no loss records yet" in text


@pytest.mark.slow
def test_a_study_whose_large_k_has_not_finished(report_dirs, tmp_path):
    study = copy_of(report_dirs["study"], tmp_path)
    config = yaml.safe_load((study / "study.yaml").read_text())
    config["real"]["per_class"] = [4, 500]
    config["dream"]["per_class"] = [3, 3]
    (study / "study.yaml").write_text(yaml.safe_dump(config))
    (study / "summary.json").unlink()  # written once every K is done
    (study / "accuracy-vs-k.png").unlink()
    (study / "K4" / "augment" / "summary.json").unlink()  # K = 4 stopped mid-comparison
    text = write_report(study).read_text()
    parsed = parse(study / "report.html")
    assert {"overview", "k4", "k500"} <= set(parsed.sections)
    assert "K = 4, 500 not finished yet" in text and "K500/: this K has not started" in text
    assert "the classifier comparison has not finished (6 of 6 (arm, seed) results" in text
    assert all(path.is_file() for path in referenced_files(study / "report.html"))


@pytest.mark.slow
def test_an_unfinished_sweep_and_dream(report_dirs, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(report_dirs["sweep"] / "sweep.json", sweep)
    text = write_report(sweep).read_text()
    assert "no cell has finished yet" in text and "no figure drawn yet" in text
    dream = copy_of(report_dirs["dream"], tmp_path)
    manifest = json.loads((dream / "manifest.json").read_text())
    manifest["status"] = "incomplete"
    (dream / "manifest.json").write_text(json.dumps(manifest))
    (dream / "preview.png").unlink()
    text = write_report(dream).read_text()
    assert "the set is incomplete" in text and "preview.png (written when the set is complete)" in text


def test_a_directory_of_no_kind_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(DreamdataError, match="not a run, study, augment, sweep or dreamed-set directory"):
        detect_kind(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "not a run, study" in error
    messages = []
    assert write_report_or_warn(tmp_path / "absent", log=messages.append) is None
    assert messages[0].startswith("warning: could not write the report")


@pytest.mark.slow
def test_cli_writes_the_page_where_asked(report_dirs, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(report_dirs["dream"]), "--out", str(out)]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    assert (tmp_path / "elsewhere" / ".page-files").is_dir()
    assert all(path.is_file() for path in referenced_files(out))
