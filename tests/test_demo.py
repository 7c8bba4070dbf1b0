"""`dreamdata demo`'s pipeline on a tiny budget: train, sample with guidance, write every figure."""

import json

from PIL import Image

from dreamdata.cli import main


def test_demo_pipeline_writes_grid_trajectory_curve_and_summary(tiny_npz, tmp_path, capsys):
    overrides = [f"data.dataset=npz:{tiny_npz}", "train.minutes=null", "train.steps=6", "train.batch_size=8",
                 "train.log_every=2",
                 "train.val_every=2", "train.sample_per_class=2", "train.sample_steps=10",
                 "train.progress=false", "model.base_channels=8", "model.channel_mults=[1,2]",
                 "model.attention_resolutions=[4]", "model.attention_head_channels=8", "process.num_steps=50"]
    assert main(["demo", *overrides, "--runs-dir", str(tmp_path / "runs")]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    grid = Image.open(run_dir / "samples" / "demo-grid.png")
    assert grid.size[1] > grid.size[0]  # three class rows of two samples
    assert (run_dir / "samples" / "demo-trajectory.png").is_file()
    assert (run_dir / "loss.png").is_file()
    summary = (run_dir / "summary.md").read_text()
    assert "6 steps of batch" in summary and "hstripes, vstripes, square" in summary
    assert json.loads((run_dir / "version.json").read_text())["dreamdata"] in summary
    out = capsys.readouterr().out
    pointers = out.split("Demo finished. Look at:\n")[1].splitlines()
    assert pointers[0] == f"  open {run_dir / 'report.html'}" and (run_dir / "report.html").is_file()
    assert str(run_dir / "samples" / "demo-grid.png") in out
