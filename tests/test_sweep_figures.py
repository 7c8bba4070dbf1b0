"""A sweep's figures (``dreamdata.experiments.figures``), drawn from hand-written ``results.jsonl`` lines and
cell sample files alone: no run directory, model or sampler anywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamdata.experiments import figures as sweep_figures


def test_figures_read_only_results_jsonl(tmp_path):
    """Figures drawn from a hand-written results.jsonl, with no run directory or model anywhere."""
    from dreamdata.experiments.sweep_config import SweepFigures

    lines = []
    for arm in ("linear", "cosine"):
        for guidance in (0.0, 1.0, 3.0):
            for steps in (10, 100):
                lines.append({"cell": f"{arm}/step-5/ddim-{steps}-w{guidance}", "arm": arm, "checkpoint_step": 5,
                              "n": 100, "sampling": {"sampler": "ddim", "steps": steps, "guidance": guidance},
                              "metrics": {"fid": 50 - 10 * guidance + guidance ** 2 + 100 / steps}})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    drawn = {p.name for p in sweep_figures.draw_figures(tmp_path, SweepFigures())}
    assert drawn == {"metric-vs-guidance.png", "metric-vs-sampling-steps.png"}


def test_metric_over_training_has_a_panel_per_metric_and_epochs_on_top(tmp_path, monkeypatch):
    """``figures.metric: [fid, recall]`` draws both over training, each with a top axis in epochs: a hand-made
    run of batch 64 on 640 images is 0.1 epoch per step, so steps 0..2,000 read as epochs 0..200 on top."""
    from dreamdata.experiments.sweep_config import SweepFigures

    lines = [{"cell": f"gan/step-{step}/gan", "arm": "gan", "checkpoint_step": step, "epoch": step / 10, "n": 50,
              "sampling": {"sampler": "gan", "steps": 1, "guidance": 0.0},
              "metrics": {"fid": 100 - step / 100, "recall": step / 4000}} for step in (500, 1000, 2000)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    saved = {}
    monkeypatch.setattr(sweep_figures, "save_figure", lambda figure, path: saved.setdefault(path.name, figure) and path)
    sweep_figures.draw_figures(tmp_path, SweepFigures(metric=["fid", "recall"]))
    figure = saved["metric-vs-step.png"]
    panels = [axis for axis in figure.axes if axis.get_xlabel() == "training step"]
    assert [axis.get_ylabel() for axis in panels] == ["FID (N = 50)", "recall (N = 50)"]
    for panel in panels:
        (top,) = [child for child in panel.child_axes if child.get_xlabel() == "epoch"]
        low, high = panel.get_xlim()
        assert top.get_xlim() == pytest.approx((low / 10, high / 10))
    # two arms with different epochs per step share no epoch axis
    lines.append({**lines[0], "arm": "other", "epoch": 500 / 20})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    saved.clear()
    sweep_figures.draw_figures(tmp_path, SweepFigures(metric="fid"))
    (panel,) = saved["metric-vs-step.png"].axes
    assert not panel.child_axes


def write_cell(out_dir, cell: str, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """A cell's ``samples.npz`` (uint8 NCHW) and its results.jsonl line, as the sweep writes them."""
    folder = out_dir / "cells" / cell
    folder.mkdir(parents=True)
    np.savez(folder / "samples.npz", images=images, labels=labels)
    return {"cell": cell, "arm": cell.split("/")[0], "checkpoint_step": 4, "class_names": class_names,
            "sampling": {"sampler": "ddim", "steps": 3, "guidance": 0.0}, "metrics": {}}


def drawn_mosaic(out_dir, lines: list[dict], monkeypatch):
    """The mosaic figure drawn from ``lines``, laid out (drawn once) but not saved."""
    (out_dir / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    saved = {}
    monkeypatch.setattr(sweep_figures, "save_figure", lambda figure, path: saved.setdefault(path.name, figure) and path)
    sweep_figures.draw_mosaics(out_dir, sweep_figures.read_results(out_dir))
    figure = saved["mosaic.png"]
    figure.canvas.draw()
    return figure


def sample_inches(figure, axis, size: int) -> float:
    """How wide one ``size``-pixel sample is drawn: the panel's rendered width over its canvas's pixel columns."""
    canvas_columns = axis.images[0].get_array().shape[1]
    return axis.get_window_extent().width / figure.dpi * size / canvas_columns


def test_mosaic_grids_unconditional_samples_squarely_and_keeps_one_row_per_class(tmp_path, monkeypatch):
    """8x8 samples, one blank pixel between them. A class-conditional cell (3 classes x 2) keeps one row per class:
    a 3 x 2 grid, canvas (3 * 9, 2 * 9) = (27, 18). Eight unconditional samples were one row of 8 (a 9 x 72
    strip, ~0.33 inch a sample), then rows of 3, 3 and 2 with a blank slot; now two full rows of 4 (4 is the
    smallest divisor of 8 that is >= sqrt(8)): canvas (18, 36), no blank slot. The page keeps the standard two
    3.4 x 3.2-inch panels: 2 * 3.4 + 0.6 by 3.2 + 0.4 inches."""
    rng = np.random.default_rng(0)
    conditional = rng.integers(0, 200, (6, 1, 8, 8), dtype=np.uint8)  # < 255, so a sample never looks blank
    unconditional = rng.integers(0, 200, (8, 1, 8, 8), dtype=np.uint8)
    lines = [write_cell(tmp_path, "classes/step-4/ddim", conditional, np.array([0, 0, 1, 1, 2, 2]), ["a", "b", "c"]),
             write_cell(tmp_path, "uncond/step-4/ddim", unconditional, np.full(8, -1), [])]
    figure = drawn_mosaic(tmp_path, lines, monkeypatch)
    assert tuple(figure.get_size_inches()) == pytest.approx((7.4, 3.6))
    by_class, square = (axis for axis in figure.axes if axis.images)
    assert by_class.images[0].get_array().shape == (27, 18)
    assert [label.get_text() for label in by_class.get_yticklabels()] == ["a", "b", "c"]
    grid = np.asarray(square.images[0].get_array())
    assert grid.shape == (18, 36)
    assert [label.get_text() for label in square.get_yticklabels()] == ["unconditional", ""]
    assert np.array_equal(grid[0:8, 0:8], unconditional[0, 0])  # row 1: samples 0 .. 3
    assert np.array_equal(grid[0:8, 27:35], unconditional[3, 0])
    assert np.array_equal(grid[9:17, 0:8], unconditional[4, 0])  # row 2 starts at sample 4 ...
    assert np.array_equal(grid[9:17, 27:35], unconditional[7, 0])  # ... and ends full, at sample 7
    assert sample_inches(figure, square, 8) >= 0.35


@pytest.mark.parametrize("count, rows", [(10, [5, 5]), (9, [3, 3, 3]), (12, [4, 4, 4]), (100, [10] * 10),
                                         (7, [3, 3, 1]), (13, [4, 4, 4, 1]), (2, [2]), (1, [1])])
def test_unconditional_grid_rows_are_full_unless_the_count_has_no_near_square_divisor(count, rows):
    """Row lengths by hand: 10 -> 5 + 5 (the cpu-recipe sweep's 10 samples were 4 + 4 + 2, two blank tiles);
    a prime count past 3 has no divisor between sqrt(N) and 2 ceil(sqrt(N)), so it keeps ceil(sqrt(N)) to a row
    (7 -> 3 + 3 + 1) rather than one strip of 7."""
    images = np.zeros((count, 1, 4, 4), dtype=np.uint8)
    grid, names, unconditional = sweep_figures._mosaic_rows(images, np.full(count, -1), [])
    assert [len(row) for row in grid] == rows
    assert unconditional and names == ["unconditional"] + [""] * (len(rows) - 1)


def test_mosaic_panel_grows_so_many_unconditional_samples_stay_readable(tmp_path, monkeypatch):
    """100 unconditional samples: a 10 x 10 grid, canvas (90, 90). In the standard 3.4 x 3.2-inch panel a sample
    would get less than 3.2 / 10 = 0.32 inch (the title and labels take their share), so the panel grows until
    each is >= 0.35 inch as drawn; the figure is then larger than the standard one-panel page (3.4 + 0.6 by
    3.2 + 0.4 inches)."""
    samples = np.random.default_rng(1).integers(0, 200, (100, 1, 8, 8), dtype=np.uint8)
    figure = drawn_mosaic(tmp_path, [write_cell(tmp_path, "many/step-4/ddim", samples, np.full(100, -1), [])],
                          monkeypatch)
    (axis,) = (axis for axis in figure.axes if axis.images)
    assert axis.images[0].get_array().shape == (90, 90)
    assert 0.35 <= sample_inches(figure, axis, 8) < 0.5
    width, height = figure.get_size_inches()
    assert width > 4.0 and height > 3.6


def test_mosaic_page_of_one_class_strips_is_short(tmp_path, monkeypatch):
    """Five one-class cells of 8 samples (the automobile-only arm of guidance-and-epochs.yaml): each panel is one
    row of 8, canvas (9, 72). A panel no longer keeps the standard 3.2-inch height around a strip: with 3.4 - 1.2
    = 2.2 inches for the samples, one row of 8 needs 2.2 / 8 = 0.275 inch plus the 1.0-inch margin for title and
    label, so the two rows of panels make a page 2 * 1.275 + 0.4 = 2.95 inches tall (was 2 * 3.2 + 0.4 = 6.8),
    and the samples are drawn no smaller than on the tall page."""
    rng = np.random.default_rng(2)
    lines = [write_cell(tmp_path, f"car/step-4/ddim-w{w}", rng.integers(0, 200, (8, 1, 8, 8), dtype=np.uint8),
                        np.zeros(8, dtype=np.int64), ["automobile"]) for w in range(5)]
    figure = drawn_mosaic(tmp_path, lines, monkeypatch)
    assert tuple(figure.get_size_inches()) == pytest.approx((4 * 3.4 + 0.6, 2.95))
    strips = [axis for axis in figure.axes if axis.images]
    assert len(strips) == 5 and all(axis.images[0].get_array().shape == (9, 72) for axis in strips)
    assert sample_inches(figure, strips[0], 8) > 0.2


def test_metric_over_training_leaves_out_cells_scored_at_one_checkpoint(tmp_path, monkeypatch):
    """Over training, only cells scored at two or more checkpoints are lines: the w = 0 cell at steps 600, 1200
    and 1800 is drawn; the w = 2 and w = 5 cells, scored at the last checkpoint only, are not in the legend."""
    from dreamdata.experiments.sweep_config import SweepFigures

    lines = [{"cell": f"guided/step-{step}/ddim-w{w}", "arm": "guided", "checkpoint_step": step, "n": 250,
              "sampling": {"sampler": "ddim", "steps": 50, "guidance": w}, "metrics": {"fid": 300 - step / 10 - w}}
             for step, w in ((600, 0.0), (1200, 0.0), (1800, 0.0), (1800, 2.0), (1800, 5.0))]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    saved = {}
    monkeypatch.setattr(sweep_figures, "save_figure", lambda figure, path: saved.setdefault(path.name, figure) and path)
    sweep_figures.draw_figures(tmp_path, SweepFigures())
    (panel,) = saved["metric-vs-step.png"].axes
    assert [text.get_text() for text in panel.get_legend().get_texts()] == ["guided, guidance=0.0"]
    (line,) = panel.get_lines()
    assert list(line.get_xdata()) == [600.0, 1200.0, 1800.0]
    assert list(line.get_ydata()) == [240.0, 180.0, 120.0]
    (guidance_panel,) = saved["metric-vs-guidance.png"].axes  # at the last checkpoint all three w are there
    assert list(guidance_panel.get_lines()[0].get_xdata()) == [0.0, 2.0, 5.0]


def test_sampling_steps_axis_is_ticked_at_the_step_counts_measured(tmp_path, monkeypatch):
    """The log-scale steps axis reads 10, 20, 50, 100, 1000 (the cells' step counts), not powers of ten."""
    from dreamdata.experiments.sweep_config import SweepFigures

    lines = [{"cell": f"base/step-5/ddim-{steps}", "arm": "base", "checkpoint_step": 5, "n": 100,
              "sampling": {"sampler": "ddim", "steps": steps, "guidance": 0.0}, "metrics": {"fid": 50 + 100 / steps}}
             for steps in (10, 20, 50, 100, 1000)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    saved = {}
    monkeypatch.setattr(sweep_figures, "save_figure", lambda figure, path: saved.setdefault(path.name, figure) and path)
    sweep_figures.draw_figures(tmp_path, SweepFigures())
    (panel,) = saved["metric-vs-sampling-steps.png"].axes
    assert list(panel.get_xticks()) == [10, 20, 50, 100, 1000]
    assert [label.get_text() for label in panel.get_xticklabels()] == ["10", "20", "50", "100", "1000"]
    assert panel.get_xscale() == "log"
