"""The Gaussian-blur degradation of cold diffusion: schedules, kernels, the composed operator, the loss, config.

The operator is checked against its definition - repeated reflect-padded 2-D convolution, one kernel per
step (``blur_step``) - and against facts that hold exactly: variances of discrete kernels add under
convolution, normalised kernels fix constant images, away from the borders no intensity is lost, and a
convolution with a probability kernel never increases total variation.
"""

from __future__ import annotations

import json

import pytest
import torch

from dreamdata.cli import main
from dreamdata.config import ProcessConfig, load_config
from dreamdata.errors import ConfigError
from dreamdata.process import GaussianBlurDegradation, Process, blur_betas, build_process
from dreamdata.process.blur_operator import blur_step, gaussian_kernel, kernel_variance, reflect_conv_matrix
from dreamdata.sampling.blur_prior import PRIOR_FILE, BlurPrior, prior_for_run
from dreamdata.training import checkpoint as ckpt
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.trainer import train


def images(shape=(2, 3, 12, 16), seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().sum(dim=(1, 2, 3))
            + (x[..., :, 1:] - x[..., :, :-1]).abs().sum(dim=(1, 2, 3)))


# -- schedules and kernels ------------------------------------------------------------------------------


def test_blur_schedules():
    assert torch.equal(blur_betas("constant", 4, beta=1.0), torch.ones(4, dtype=torch.float64))
    linear = blur_betas("linear", 5, beta_start=0.5, beta_end=2.5)
    assert torch.allclose(linear, torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64))
    exponential = blur_betas("exponential", 5, beta_start=0.1, beta_end=1.6)
    assert torch.allclose(exponential, torch.tensor([0.1, 0.2, 0.4, 0.8, 1.6], dtype=torch.float64))  # ratio 2
    for call, named in [(lambda: blur_betas("cosine", 4), "cosine"),
                        (lambda: blur_betas("constant", 4, beta=0.0), "0.0"),
                        (lambda: blur_betas("linear", 4, beta_start=-1.0), "-1.0"),
                        (lambda: blur_betas("constant", 0), "0")]:
        with pytest.raises(ValueError, match=named):
            call()


def test_kernel_is_a_normalised_symmetric_gaussian():
    kernel = gaussian_kernel(1.0, 11)
    assert kernel.shape == (11,) and abs(float(kernel.sum()) - 1.0) < 1e-15
    assert torch.equal(kernel, kernel.flip(0)) and int(kernel.argmax()) == 5
    assert abs(float(kernel[6] / kernel[5]) - torch.exp(torch.tensor(-0.5, dtype=torch.float64)).item()) < 1e-15
    assert abs(kernel_variance(kernel) - 1.0) < 1e-6  # sampled at unit spacing, 5 sigma wide: ~exact
    assert kernel_variance(gaussian_kernel(16.0, 11)) < 16.0 - 1.0  # truncated at 1.25 sigma: clearly less
    for size in (0, 4, -3):
        with pytest.raises(ValueError, match=str(size)):
            gaussian_kernel(1.0, size)


def test_reflect_matrix_rows_are_averages_and_match_torch_padding():
    kernel = gaussian_kernel(2.0, 7)
    matrix = reflect_conv_matrix(kernel, 9)
    assert torch.allclose(matrix.sum(1), torch.ones(9, dtype=torch.float64), atol=1e-15)
    x = images((1, 1, 9))
    padded = torch.nn.functional.pad(x, (3, 3), mode="reflect")
    direct = torch.nn.functional.conv1d(padded, kernel.view(1, 1, -1))
    assert torch.allclose(matrix @ x[0, 0], direct[0, 0], atol=1e-14)
    with pytest.raises(ValueError, match="larger than 3"):
        reflect_conv_matrix(kernel, 3)


# -- the operator ---------------------------------------------------------------------------------------


def make_blur(num_steps=6, schedule="linear", kernel_size=5, loss="l1") -> GaussianBlurDegradation:
    return GaussianBlurDegradation(blur_betas(schedule, num_steps, beta_start=0.3, beta_end=2.0), kernel_size, loss)


def test_zero_steps_is_the_identity():
    blur = make_blur()
    x = images()
    assert torch.equal(blur.degrade(x, 0), x)
    assert torch.equal(blur.degrade(x.float(), 0), x.float())


def test_composed_operator_is_the_composition_of_the_steps():
    blur = make_blur()  # a linear schedule: every step has its own kernel
    x = images()  # non-square, three channels
    stepped = x
    for s in range(1, blur.num_steps + 1):
        stepped = blur_step(stepped, blur.kernels[s - 1])  # z_s = G_s * z_{s-1}
        assert torch.allclose(blur.degrade(x, s), stepped, atol=1e-12, rtol=0), s
    # one step count per image; q_sample at index t is t + 1 steps
    steps = torch.tensor([2, 5])
    per_image = blur.degrade(x, steps)
    for row, s in enumerate(steps.tolist()):
        assert torch.allclose(per_image[row], blur.degrade(x[row:row + 1], s)[0], atol=1e-14)
    assert torch.equal(blur.q_sample(x, steps - 1), per_image)
    assert torch.allclose(blur.degrade(x.float(), 4).double(), blur.degrade(x, 4), atol=1e-5)


def test_smoothing_increases_with_t():
    blur = make_blur(num_steps=8, schedule="constant", kernel_size=11)
    x = images((4, 1, 16, 16))
    tv = torch.stack([total_variation(blur.degrade(x, s)) for s in range(blur.num_steps + 1)])  # [T + 1, B]
    assert (tv[1:] < tv[:-1]).all()  # strictly smoother at every step (TV never grows under averaging)
    spread = torch.stack([blur.degrade(x, s).std(dim=(2, 3)) for s in range(blur.num_steps + 1)])
    assert (spread[1:] < spread[:-1]).all()  # and closer to flat
    assert (tv[-1] < 0.2 * tv[0]).all()


def test_mass_is_preserved():
    blur = make_blur(num_steps=4, schedule="constant", kernel_size=5)
    constant = torch.full((1, 2, 10, 12), 0.3, dtype=torch.float64)
    for s in range(blur.num_steps + 1):
        assert torch.allclose(blur.degrade(constant, s), constant, atol=1e-14)  # normalised kernels fix constants
    impulse = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    impulse[0, 0, 15, 15] = 1.0  # 4 steps of radius 2 stay 7 pixels away from the border
    blurred = blur.degrade(impulse, blur.num_steps)
    assert abs(float(blurred.sum()) - 1.0) < 1e-14
    # and the composed blur's variance is the sum of the discrete kernels' variances (exact, away from borders)
    offsets = torch.arange(31, dtype=torch.float64) - 15
    row_marginal = blurred[0, 0].sum(1)
    assert abs(float((row_marginal * offsets ** 2).sum()) - sum(kernel_variance(k) for k in blur.kernels)) < 1e-12
    # reflect padding is not mass-preserving at the border (a reflected pixel counts twice)
    corner = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    corner[0, 0, 1, 1] = 1.0
    assert float(blur.degrade(corner, 1).sum()) > 1.0


def test_image_smaller_than_the_kernel_names_the_key():
    blur = make_blur(kernel_size=11)
    with pytest.raises(ConfigError, match="process.kernel_size=11"):
        blur.degrade(torch.zeros(1, 1, 4, 4), 1)


# -- the training loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_training_loss_is_the_distance_to_x0(loss):
    blur = make_blur(loss=loss)
    x0 = images((5, 1, 8, 8)).float()
    seen = {}

    def oracle(x_t, t, labels):  # a perfect restorer
        seen["x_t"], seen["t"], seen["labels"] = x_t, t, labels
        return x0.clone()

    labels = torch.arange(5)
    assert torch.equal(blur.training_losses(oracle, x0, labels), torch.zeros(5))
    assert torch.equal(seen["x_t"], blur.q_sample(x0, seen["t"])) and seen["labels"] is labels
    zero = blur.training_losses(lambda x, t, c: torch.zeros_like(x), x0, None)
    expected = x0.abs().mean(dim=(1, 2, 3)) if loss == "l1" else x0.pow(2).mean(dim=(1, 2, 3))
    assert torch.allclose(zero, expected)


def test_training_timesteps_come_from_the_generator():
    blur = make_blur()
    x0 = images((16, 1, 8, 8)).float()
    seen = []

    def record(x_t, t, labels):
        seen.append(t)
        return torch.zeros_like(x_t)

    a = blur.training_losses(record, x0, None, generator=torch.Generator().manual_seed(3))
    b = blur.training_losses(record, x0, None, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(seen[0], seen[1])
    assert torch.equal(seen[0], blur.sample_timesteps(16, "cpu", torch.Generator().manual_seed(3)))
    assert 0 <= int(seen[0].min()) and int(seen[0].max()) < blur.num_steps
    fixed = blur.training_losses(record, x0, None, t=torch.full((16,), 2))
    assert torch.equal(seen[-1], torch.full((16,), 2)) and fixed.shape == (16,)
    with pytest.raises(ValueError, match=r"\(16, 1, 4, 4\)"):
        blur.training_losses(lambda x, t, c: x[..., :4, :4], x0, None)


# -- config -------------------------------------------------------------------------------------------


def test_build_from_config():
    config = ProcessConfig(kind="blur", num_steps=100, blur_schedule="constant", blur_beta=1.0, kernel_size=11,
                           blur_loss="l2")
    blur = build_process(config)
    assert isinstance(blur, GaussianBlurDegradation) and isinstance(blur, Process)
    assert blur.num_steps == 100 and blur.kernel_size == 11 and blur.loss == "l2"
    assert torch.equal(blur.betas, torch.ones(100, dtype=torch.float64))
    assert "total_variance=100" in repr(blur)


@pytest.mark.parametrize("override, named", [
    ("process.kind=smear", "process.kind"),
    ("process.kernel_size=4", "process.kernel_size"),
    ("process.kernel_size=0", "process.kernel_size"),
    ("process.blur_schedule=cosine", "process.blur_schedule"),
    ("process.blur_loss=huber", "process.blur_loss"),
    ("process.blur_beta=0", "process.blur_beta"),
    ("process.blur_beta_end=-1", "process.blur_beta_end"),
    ("process.blur_prior_components=0", "process.blur_prior_components"),
    ("process.blur_start_noise=-0.1", "process.blur_start_noise"),
])
def test_bad_blur_config_names_the_key(override, named):
    extra = ["process.blur_schedule=linear"] if "beta_end" in override else []
    with pytest.raises(ConfigError, match=named):
        load_config("tiny", ["process.kind=blur", *extra, override])


def test_blur_keys_are_not_checked_for_gaussian_runs():
    assert load_config("tiny", ["process.kernel_size=4"]).process.kernel_size == 4


# -- end to end ---------------------------------------------------------------------------------------


BLUR = ["process.kind=blur", "process.num_steps=8", "process.kernel_size=5", "process.blur_beta=0.5"]


@pytest.mark.slow
def test_blur_run_trains_resumes_exactly_and_samples(tiny_overrides, tmp_path, capsys):
    overrides = tiny_overrides + BLUR + ["train.steps=12", "train.log_every=3", "train.checkpoint_every=0",
                                         "train.sample_per_class=2"]
    uninterrupted = train(load_config("tiny", overrides))
    interrupted = train(load_config("tiny", overrides), stop_at_step=5)
    resumed = train(load_config("tiny", overrides), resume=interrupted.run_dir)
    losses = [[r["loss"] for r in read_metrics(run.run_dir)] for run in (uninterrupted, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    a = ckpt.load_weights(ckpt.latest_checkpoint(uninterrupted.run_dir))
    b = ckpt.load_weights(ckpt.latest_checkpoint(resumed.run_dir))
    assert all(torch.equal(a.ema[name], b.ema[name]) for name in a.ema)

    run_dir = uninterrupted.run_dir
    assert list((run_dir / "samples").glob("grid-step-*.png"))
    prior = BlurPrior.load(run_dir / PRIOR_FILE)
    assert len(prior.weights) == 1 and len(prior.means[0]) == 1 and prior.num_images == 43
    # without the saved file, the prior is refitted to the same training split: the same numbers
    config = load_config("tiny", overrides)
    (run_dir / PRIOR_FILE).rename(tmp_path / "saved.json")
    assert prior_for_run(build_process(config.process), config, run_dir) == prior
    assert not (run_dir / PRIOR_FILE).exists()
    (tmp_path / "saved.json").rename(run_dir / PRIOR_FILE)

    out = tmp_path / "cold"
    assert main(["sample", str(run_dir), "--n", "2", "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "sample.json").read_text())
    assert record["sampler"] == "cold-improved" and record["steps"] == 8 and record["start_noise"] == 0.02
    assert main(["sample", str(run_dir), "--n", "1", "--sampler", "cold-naive", "--steps", "3",
                 "--start-noise", "0", "--out", str(tmp_path / "naive"), "--device", "cpu"]) == 0
    restore_dir = tmp_path / "restore"
    assert main(["sample", str(run_dir), "--from-test", "5", "--out", str(restore_dir), "--device", "cpu"]) == 0
    restore = json.loads((tmp_path / "restore" / "sample.json").read_text())
    assert restore["test_images"] == 5 and set(restore["scores"]) == {"rmse", "psnr", "ssim"}
    assert (tmp_path / "restore" / "restoration.png").is_file()
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--sampler", "ddim", "--device", "cpu"]) == 2
    assert "cold-improved, cold-naive" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--eta", "0.5", "--device", "cpu"]) == 2


def test_cold_sampler_on_a_gaussian_run_is_refused(tiny_overrides, capsys):
    run = train(load_config("tiny", tiny_overrides + ["train.steps=2", "train.sample_grid=false"]))
    assert main(["sample", str(run.run_dir), "--sampler", "cold-naive", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "Gaussian diffusion" in error and "ddpm" in error
    assert main(["sample", str(run.run_dir), "--start-noise", "0.1", "--device", "cpu"]) == 2
    assert "blur" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_blur_on_cuda_matches_cpu():
    blur = make_blur()
    x = images().float()
    assert torch.allclose(blur.degrade(x.cuda(), torch.tensor([1, 6]).cuda()).cpu(),
                          blur.degrade(x, torch.tensor([1, 6])), atol=1e-5)
