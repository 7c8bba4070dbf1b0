"""Progressive distillation (Salimans & Ho 2022): the Algorithm-2 target, the teacher's DDIM steps, the analytic
Gaussian toy, an exact resume, and `dreamdata distill` end to end on a tiny run."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_pattern_images
from torch import nn

from dreamdata.cli import main
from dreamdata.config import load_config
from dreamdata.distill.objective import teacher_two_steps
from dreamdata.distill.plan import DistillOptions
from dreamdata.distill.record import DistilledSampler
from dreamdata.distill.round import DistillationRound
from dreamdata.distill.run import distill_run
from dreamdata.distill.target import distillation_grids, distillation_target, student_steps
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.schedules import cosine_betas, linear_betas
from dreamdata.sampling.ddim import ddim_sample
from dreamdata.training import checkpoint as ckpt
from dreamdata.training.pretrained import load_trained
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.trainer import train

CLASS_NAMES = ["hstripes", "vstripes", "square"]


# -- the maths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha_bar_end", [0.3, 0.9, 1.0])  # 1.0: the last step, which lands on x0
def test_one_ddim_step_with_the_target_lands_on_the_teachers_state(alpha_bar_end):
    generator = torch.Generator().manual_seed(0)
    z_t, z_end = torch.randn(5, 3, 4, 4, generator=generator, dtype=torch.float64), \
        torch.randn(5, 3, 4, 4, generator=generator, dtype=torch.float64)
    alpha_bar_t = torch.tensor([0.01, 0.1, 0.2, 0.25, 0.05], dtype=torch.float64)
    target = distillation_target(z_t, z_end, alpha_bar_t, torch.full((5,), alpha_bar_end, dtype=torch.float64))
    # independent algebra: the DDIM step (Song et al. 2021, eq. 12, eta = 0) from z_t with x0 = target
    a_t = alpha_bar_t.reshape(-1, 1, 1, 1)
    eps = (z_t - a_t.sqrt() * target) / (1 - a_t).sqrt()
    landed = alpha_bar_end ** 0.5 * target + (1 - alpha_bar_end) ** 0.5 * eps
    assert torch.allclose(landed, z_end, atol=1e-12, rtol=0)


class ConstantX0(nn.Module):
    """An x0-predicting 'network' that returns fixed predictions, whatever its input."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0

    def forward(self, x, t, labels=None):
        return self.x0


def test_the_library_ddim_sampler_with_the_target_lands_on_the_teachers_state():
    process = GaussianDiffusion(linear_betas(100), prediction="x0")
    t, t_end = 80, 30
    generator = torch.Generator().manual_seed(1)
    z_t, z_end = (torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    ab = process.schedule.alpha_bar
    target = distillation_target(z_t, z_end, ab[[t] * 4], ab[[t_end] * 4])
    states = {}
    ddim_sample(ConstantX0(target), process, z_t, [t, t_end], x0_clip="none",
                callback=lambda i, tau, x, x0: states.setdefault(i, x.clone()))
    assert torch.allclose(states[1], z_end, atol=1e-10, rtol=0)


def test_grids_halve_by_taking_every_other_index_and_start_from_noise():
    grids = distillation_grids(1000, 64, 1)
    assert [len(grid) for grid in grids] == [64, 32, 16, 8, 4, 2, 1]
    for teacher, student in zip(grids, grids[1:]):
        assert teacher[::2] == student
    assert all(grid[0] == 999 for grid in grids) and grids[-2] == [999, 499]
    assert distillation_grids(50, 8, 2)[-1] == [49, 24]
    for bad in ((2000, 4), (64, 64), (48, 4), (64, 0)):
        with pytest.raises(ValueError):
            distillation_grids(1000, *bad)


@pytest.mark.parametrize("prediction", ["v", "edm"])
def test_the_teachers_two_steps_are_the_guided_ddim_samplers_steps(prediction):
    """Per-example timesteps, guidance and static clipping agree with ``ddim_sample`` on a real UNet (also
    for an EDM-preconditioned network, whose input the process rescales)."""
    from dreamdata.networks.unet import UNet

    torch.manual_seed(0)
    network = UNet(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                   attention_resolutions=(), num_classes=3, dropout=0.0).eval()
    with torch.no_grad():  # the UNet's last layer starts at zero: perturb it so the output depends on the input
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    process = GaussianDiffusion(linear_betas(50), prediction=prediction)
    grid = distillation_grids(50, 8, 4)[0]
    table = student_steps(grid, process.schedule.alpha_bar)
    labels = torch.tensor([0, 2, 1])
    clip = "static" if prediction == "v" else "none"  # the clipped and the unclipped path
    for j in range(len(table.t)):
        z_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(j))
        ours = teacher_two_steps(network, process, z_t, torch.full((3,), j), table, labels, 1.5, network.null_class,
                                 clip)
        states = {}
        rest = grid[2 * j:]
        ddim_sample(network, process, z_t, rest, class_labels=labels, guidance_scale=1.5, x0_clip=clip,
                    callback=lambda i, tau, x, x0: states.setdefault(i, x.clone()))
        if len(rest) > 2:
            reference = states[2]
        else:  # the round's last student step lands on x0: the sampler's output
            reference = ddim_sample(network, process, z_t, rest, class_labels=labels, guidance_scale=1.5,
                                    x0_clip=clip)
        assert torch.allclose(ours, reference, atol=1e-5, rtol=0), j


# -- the analytic Gaussian toy -----------------------------------------------------------------------

MU = torch.tensor([0.6, -0.4, 0.2, 0.0], dtype=torch.float64).reshape(1, 4, 1, 1)
S = 0.5  # data: x0 ~ N(MU, S^2 I)


def exact_gain(alpha_bar: torch.Tensor) -> torch.Tensor:
    """``E[x0 | x_t] = MU + k (x_t - sqrt(ab) MU)`` with ``k = S^2 sqrt(ab) / (ab S^2 + 1 - ab)``."""
    return S ** 2 * alpha_bar.sqrt() / (alpha_bar * S ** 2 + 1 - alpha_bar)


class OptimalDenoiser(nn.Module):
    """The exact posterior mean of the Gaussian data, as an x0 prediction: the ideal teacher."""

    def __init__(self, alpha_bar: torch.Tensor):
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bar.clone())

    def forward(self, x, t, labels=None):
        ab = self.alpha_bar[t].reshape(-1, 1, 1, 1)
        return MU + exact_gain(ab) * (x - ab.sqrt() * MU)


class AffineDenoiser(nn.Module):
    """A learnable x0 prediction ``a_t x + b_t`` per timestep: the family that holds every DDIM jump of the
    optimal denoiser (each is affine in ``x_t``), initialised as the teacher's own."""

    def __init__(self, alpha_bar: torch.Tensor):
        super().__init__()
        gain = exact_gain(alpha_bar)
        self.a = nn.Parameter(gain.clone())
        self.b = nn.Parameter((1 - gain * alpha_bar.sqrt())[:, None] * MU.reshape(1, 4))

    def forward(self, x, t, labels=None):
        return self.a[t].reshape(-1, 1, 1, 1) * x + self.b[t].reshape(-1, 4, 1, 1)


def test_distilled_gaussian_toy_matches_the_teachers_many_step_ddim():
    """Distil 64 -> 32 -> ... -> 1 step on the cosine schedule, where 64-step DDIM of the optimal denoiser is
    close to the data distribution (8 steps, or the linear schedule, lose much of its variance: a property of
    few-step DDIM, not of distillation)."""
    process = GaussianDiffusion(cosine_betas(1000), prediction="x0")
    alpha_bar = process.schedule.alpha_bar
    grids = distillation_grids(1000, 64, 1)
    teacher = OptimalDenoiser(alpha_bar)
    student = AffineDenoiser(alpha_bar)
    steps = 300
    for round_index, grid in enumerate(grids[:-1]):
        optimizer = torch.optim.Adam(student.parameters(), lr=0.02)
        distillation = DistillationRound(teacher, student, process, grid, optimizer, steps, lr=0.02, grad_clip=0,
                                         x0_clip="none", seed=round_index)
        for k in range(steps):
            step = 10_000 * round_index + k
            x0 = MU + S * torch.randn(256, 4, 1, 1, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
            distillation.step(k, step, x0, None)
        teacher = copy.deepcopy(student)  # the student becomes the teacher; N halves
    noise = torch.randn(8000, 4, 1, 1, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    exact = OptimalDenoiser(alpha_bar)
    with torch.no_grad():
        many_steps = ddim_sample(exact, process, noise, grids[0], x0_clip="none")
        one_step = ddim_sample(student, process, noise, grids[-1], x0_clip="none")
        undistilled = ddim_sample(exact, process, noise, grids[-1], x0_clip="none")
    # the 1-step student reproduces the 64-step teacher sample by sample (distillation's promise; exactly here,
    # as every target is affine in z_t and so in the student's family: ~3e-7 after 300 updates a round) ...
    error = (one_step - many_steps).abs().max().item()
    assert error < 1e-4, error
    # ... where one step of the teacher itself is far off (it collapses every sample onto the mean)
    assert (undistilled - many_steps).abs().max().item() > 1.0
    # and its samples have the data's distribution N(MU, S^2 I), as far as 64-step DDIM gets there (std 0.49)
    assert (one_step.mean(0) - MU[0]).abs().max() < 0.02
    assert (one_step.std(0) - S).abs().max() < 0.02


# -- run directories and the command line ------------------------------------------------------------


def tiny_teacher(folder: Path, prediction: str) -> Path:
    images, labels = make_pattern_images(per_class=8)
    npz = folder / "tiny.npz"
    np.savez(npz, images=images, labels=labels, class_names=np.array(CLASS_NAMES))
    return train(load_config("tiny", [f"data.dataset=npz:{npz}", f"runs_dir={folder / 'runs'}", "data.per_class=null",
                                      "train.steps=6", "train.sample_grid=false", "train.checkpoint_every=0",
                                      "train.val_every=0", f"process.prediction={prediction}"])).run_dir


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    return tiny_teacher(tmp_path_factory.mktemp("teacher"), "v")


def without_timing(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "elapsed_s"} for record in records]


def exit_status(argv: list[str]) -> int:
    """``main(argv)``, or the status of argparse's own exit (a usage error)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


OPTIONS = dict(from_steps=8, to_steps=2, steps_per_round=4, guidance=1.0, checkpoint_every=3, log_every=1)


@pytest.mark.parametrize("stop_at", [5, 7])  # the newest checkpoint: a round's end (4), mid-round (6)
def test_a_resumed_distillation_equals_an_uninterrupted_one(teacher_run, tmp_path, stop_at):
    options = DistillOptions(**OPTIONS)
    whole = distill_run(teacher_run, options, out=tmp_path / "whole", device="cpu", progress=False)
    assert whole.complete and whole.step == 8
    parts = tmp_path / "parts"
    cut = distill_run(teacher_run, options, out=parts, device="cpu", progress=False, stop_at_step=stop_at)
    assert not cut.complete and read_metrics(parts)[-1]["step"] == stop_at  # logged, but after the checkpoint
    resumed = distill_run(teacher_run, options, out=parts, device="cpu", progress=False)
    assert resumed.complete and resumed.step == 8
    assert without_timing(read_metrics(parts)) == without_timing(read_metrics(tmp_path / "whole"))
    a, b = (ckpt.load_weights(ckpt.latest_checkpoint(path)) for path in (tmp_path / "whole", parts))
    for name in a.model:
        assert torch.equal(a.model[name], b.model[name]), name
    # every round's end is kept (each is the next round's teacher), mid-round checkpoints are gone
    assert sorted(p.name for p in (parts / "checkpoints").glob("*.safetensors")) == [
        "step-000000000.safetensors", "step-000000004.safetensors", "step-000000008.safetensors"]
    rounds = [record for record in read_metrics(parts) if "round_loss" in record]
    assert [(r["step"], r["teacher_steps"], r["student_steps"]) for r in rounds] == [(4, 8, 4), (8, 4, 2)]


def test_distill_cli_writes_a_run_that_sample_and_dream_read(teacher_run, tmp_path, capsys):
    out = tmp_path / "distilled"
    assert main(["distill", str(teacher_run), "--from-steps", "8", "--to-steps", "2", "--steps-per-round", "3",
                 "--guidance", "1", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    assert "complete" in capsys.readouterr().out
    model = load_trained(out)
    assert model.distilled == DistilledSampler(steps=2, timesteps=(49, 24), guidance=1.0, x0_clip="static",
                                               teacher_steps=4, round=1, rounds=2)
    plan = json.loads((out / "distill.json").read_text())
    assert plan["grids"] == [[49, 43, 37, 30, 24, 18, 11, 5], [49, 37, 24, 11], [49, 24]]
    samples = tmp_path / "samples"
    assert main(["sample", str(out), "--n", "2", "--device", "cpu", "--out", str(samples)]) == 0
    record = json.loads((samples / "sample.json").read_text())
    assert (record["sampler"], record["steps"], record["spacing"], record["timesteps"]) == \
        ("ddim", 2, "trailing", [49, 24])
    assert record["network_evaluations_per_sample"] == 2 and record["distilled"]["guidance"] == 1.0
    images = np.load(samples / "samples.npz")
    assert images["images"].shape == (6, 8, 8, 1) and sorted(set(images["labels"].tolist())) == [0, 1, 2]
    # asking for the sampler it was distilled for is fine; anything else is a one-line error
    assert main(["sample", str(out), "--n", "1", "--device", "cpu", "--sampler", "ddim", "--steps", "2",
                 "--spacing", "trailing", "--out", str(tmp_path / "same")]) == 0
    capsys.readouterr()
    for extra in (["--steps", "4"], ["--sampler", "ddpm"], ["--spacing", "linspace"], ["--guidance", "1"]):
        assert main(["sample", str(out), "--n", "1", "--device", "cpu", *extra]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "distilled" in error and "Traceback" not in error, error
    dreamed = tmp_path / "dreamed"
    assert main(["dream", str(out), "--per-class", "2", "--out", str(dreamed), "--workers", "1",
                 "--device", "cpu"]) == 0
    manifest = json.loads((dreamed / "manifest.json").read_text())
    assert (manifest["spec"]["sampler"], manifest["spec"]["steps"], manifest["spec"]["spacing"]) == \
        ("ddim", 2, "trailing")


def test_bad_distill_arguments_are_one_line_errors(teacher_run, tmp_path, capsys):
    base = ["distill", str(teacher_run), "--device", "cpu", "--no-progress", "--steps-per-round", "2"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    cases = [(["--from-steps", "64"], "exceeds"),  # T = 50
             (["--from-steps", "12", "--to-steps", "4"], "power of two"),
             (["--from-steps", "8", "--to-steps", "8"], "power of two"),
             (["--from-steps", "8", "--x0-clip", "sometimes"], "--x0-clip"),
             (["--from-steps", "8", "--out", str(tmp_path / "busy")], "not empty"),
             (["--from-steps", "8", "--steps-per-round", "0"], "--steps-per-round"),
             (["--from-steps", "8", "--guidance", "-1"], "guidance")]
    for extra, expected in cases:
        assert exit_status([*base, *extra]) == 2, extra
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and expected in error and "Traceback" not in error, error
    out = tmp_path / "run"
    assert main([*base, "--from-steps", "8", "--to-steps", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*base, "--from-steps", "8", "--to-steps", "4", "--lr", "0.5", "--out", str(out)]) == 2
    assert "lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(out)]) == 2
    assert "dreamdata distill" in capsys.readouterr().err


def test_a_sweep_samples_a_distilled_arm_with_its_own_sampler():
    from dreamdata.experiments.cells import resolve_sampling
    from dreamdata.experiments.sweep_config import SAMPLING_DEFAULTS

    process = GaussianDiffusion(linear_betas(50))
    record = DistilledSampler(steps=2, timesteps=(49, 24), guidance=1.0, x0_clip="static", teacher_steps=4,
                              round=1, rounds=2)
    cells = [{**SAMPLING_DEFAULTS, "sampler": sampler, "steps": 20, "guidance": w}
             for sampler in ("ddim", "ddpm") for w in (0.0, 2.0)]
    resolved = [resolve_sampling(cell, "gaussian", 50, process, distilled=record) for cell in cells]
    assert all(r == resolved[0] for r in resolved)
    assert (resolved[0]["sampler"], resolved[0]["steps"], resolved[0]["spacing"], resolved[0]["guidance"]) == \
        ("ddim", 2, "trailing", 0.0)


def test_a_distillation_that_died_before_its_first_checkpoint_starts_again(teacher_run, tmp_path):
    import shutil

    options = DistillOptions(from_steps=8, to_steps=4, steps_per_round=2)
    out = tmp_path / "run"
    distill_run(teacher_run, options, out=out, device="cpu", progress=False)
    shutil.rmtree(out / "checkpoints")  # as if killed between distill.json and the teacher's copy
    result = distill_run(teacher_run, options, out=out, device="cpu", progress=False)
    assert result.complete and result.distilled.steps == 4


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_distilling_an_epsilon_teacher_below_32_steps_warns_in_one_line(teacher_run, tmp_path, prediction):
    """An epsilon teacher's few-step students degrade (Salimans & Ho 2022, sec. 4): distilling one to 2 steps
    prints one ``dreamdata distill: warning:`` line pointing at v-prediction; a v teacher gets none."""
    run = teacher_run if prediction == "v" else tiny_teacher(tmp_path, "epsilon")
    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: shown.append(
            warnings.formatwarning(message, category, filename, lineno, line))  # formatted as the CLI formats
        assert main(["distill", str(run), "--from-steps", "8", "--to-steps", "2", "--steps-per-round", "1",
                     "--device", "cpu", "--no-progress", "--out", str(tmp_path / "student")]) == 0
    about_epsilon = [text for text in shown if "predicts epsilon" in text]
    if prediction == "v":
        assert about_epsilon == []
    else:
        assert len(about_epsilon) == 1, shown
        line = about_epsilon[0]
        assert line.startswith("dreamdata distill: warning: ") and line.count("\n") == 1
        assert "process.prediction=v" in line and "below 32 steps" in line
