"""Tests of the noise schedules and the Gaussian diffusion process, against independent formulas."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from dreamdata.config import ProcessConfig
from dreamdata.process import (
    GaussianDiffusion,
    Process,
    ScheduleWarning,
    betas_from_config,
    build_process,
    constant_betas,
    cosine_betas,
    derive_schedule,
    linear_betas,
)
from dreamdata.errors import ConfigError
from dreamdata.process.rng import check_generator

PREDICTIONS = ("epsilon", "x0", "v", "edm")



# -- schedules ------------------------------------------------------------------------------------


def test_linear_betas_endpoints_and_spacing():
    betas = linear_betas(1000, 1e-4, 0.02)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    steps = betas.diff().numpy()
    np.testing.assert_allclose(steps, (0.02 - 1e-4) / 999, rtol=1e-9)
    assert linear_betas(1, 1e-4, 0.02).tolist() == [1e-4]


def test_cosine_alpha_bar_matches_formula_until_clip():
    T, s = 1000, 0.008
    betas = cosine_betas(T, s=s).numpy()
    t = np.arange(T + 1, dtype=np.float64)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2
    expected_alpha_bar = f[1:] / f[0]
    unclipped = 1 - expected_alpha_bar / np.concatenate([[1.0], expected_alpha_bar[:-1]])
    clipped = unclipped > 0.999
    assert clipped.any() and clipped[-1]  # the last step is where the clip bites
    first_clip = int(np.argmax(clipped))
    np.testing.assert_allclose(np.cumprod(1 - betas)[:first_clip], expected_alpha_bar[:first_clip], rtol=1e-10)
    np.testing.assert_allclose(betas[clipped], 0.999)
    assert betas.max() <= 0.999 and betas.min() > 0


def test_constant_betas():
    betas = constant_betas(7, 0.05)
    assert betas.dtype == torch.float64 and betas.tolist() == [0.05] * 7


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_betas_from_config(schedule):
    config = ProcessConfig(schedule=schedule, num_steps=50, beta_start=2e-4, beta_end=0.03,
                           constant_beta=0.01, cosine_s=0.01)
    expected = {"linear": linear_betas(50, 2e-4, 0.03), "cosine": cosine_betas(50, s=0.01),
                "constant": constant_betas(50, 0.01)}[schedule]
    assert torch.equal(betas_from_config(config), expected)


@pytest.mark.parametrize("call, named", [
    (lambda: linear_betas(0), "0"),
    (lambda: linear_betas(2.5), "2.5"),
    (lambda: linear_betas(10, 0.0, 0.02), "0.0"),
    (lambda: linear_betas(10, 1e-4, 1.5), "1.5"),
    (lambda: cosine_betas(10, s=-0.1), "-0.1"),
    (lambda: cosine_betas(10, max_beta=1.0), "1.0"),
    (lambda: constant_betas(10, 1.25), "1.25"),
    (lambda: constant_betas(-3, 0.1), "-3"),
    (lambda: derive_schedule(torch.tensor([0.1, 1.0, 0.2], dtype=torch.float64)), "1.0"),
    (lambda: derive_schedule(torch.tensor([0.1, -0.5])), "-0.5"),
    (lambda: derive_schedule(torch.zeros(0)), "shape"),
    (lambda: betas_from_config(ProcessConfig(schedule="sigmoid")), "sigmoid"),
])
def test_bad_schedule_arguments_raise_value_error_naming_the_value(call, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        call()


def test_a_schedule_whose_float32_alpha_bar_underflows_is_refused(capsys):
    """Constant beta = 0.1 for T = 2000: alpha_bar_T = 0.9 ** 2000 = 3.06e-92, which is 0 in float32, where
    every sampler divides by sqrt(alpha_bar). Refused when the process is built, naming the keys."""
    tiny = torch.finfo(torch.float32).tiny
    assert 0.9 ** 2000 == pytest.approx(3.0551e-92, rel=1e-4) and float(torch.tensor(0.9 ** 2000).float()) == 0.0
    with pytest.raises(ConfigError, match=r"process\.schedule=constant, process\.constant_beta=0\.1, "
                                          r"process\.num_steps=2000 gives alpha_bar_T = 3\.06e-92.*float32.*NaN"
                       ) as caught:
        build_process(ProcessConfig(schedule="constant", constant_beta=0.1, num_steps=2000))
    longest = int(re.search(r"num_steps <= (\d+)", str(caught.value)).group(1))
    assert 0.9 ** longest >= tiny > 0.9 ** (longest + 1)  # the advice is the exact limit
    process = build_process(ProcessConfig(schedule="constant", constant_beta=0.1, num_steps=longest))
    from dreamdata.sampling import ddim_sample, timestep_sequence

    samples = ddim_sample(lambda x, t, c: 0.9 * x, process, torch.randn(2, 1, 4, 4), timestep_sequence(longest, 5))
    assert torch.isfinite(samples).all()  # just inside the limit, float32 sampling is still finite
    with pytest.raises(ConfigError, match=r"process\.beta_end=0\.5, process\.num_steps=2000.*process\.schedule=cosine"):
        build_process(ProcessConfig(schedule="linear", beta_end=0.5, num_steps=2000))
    with pytest.raises(ValueError, match="3.06e-92 underflows float32"):
        GaussianDiffusion(constant_betas(2000, 0.1))  # built from raw betas: no config keys to name
    from dreamdata.cli import main

    assert main(["train", "tiny", "process.schedule=constant", "process.constant_beta=0.1",
                 "process.num_steps=2000", "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "process.constant_beta=0.1" in error and "alpha_bar_T" in error


def test_a_linear_schedule_that_ends_short_of_noise_warns():
    """DDPM's linear betas at T = 100 end at alpha_bar_T = prod(1 - beta) = 0.364: x_T keeps sqrt(0.364) = 0.6
    of the image, so it is not the N(0, I) that sampling starts from."""
    expected = float(np.prod(1 - np.linspace(1e-4, 0.02, 100)))
    assert expected == pytest.approx(0.3636, abs=1e-4)
    with pytest.warns(ScheduleWarning, match=rf"process\.num_steps=100 gives alpha_bar_T = {expected:.3g} > 0\.001"):
        build_process(ProcessConfig(schedule="linear", num_steps=100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_process(ProcessConfig(schedule="linear", num_steps=1000))  # alpha_bar_T = 4e-5
        build_process(ProcessConfig(schedule="cosine", num_steps=100))


# -- derived schedule tensors ---------------------------------------------------------------------


@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(300), constant_betas(20, 0.05)],
                         ids=["linear", "cosine", "constant"])
def test_derived_tensors_match_closed_forms(betas):
    sched = derive_schedule(betas)
    b = betas.numpy()
    a = 1 - b
    ab = np.cumprod(a)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    beta_tilde = (1 - ab_prev) / (1 - ab) * b  # Ho et al. 2020, eq. 7
    expected = {
        "betas": b,
        "alphas": a,
        "alpha_bar": ab,
        "alpha_bar_prev": ab_prev,
        "sqrt_alpha_bar": np.sqrt(ab),
        "sqrt_one_minus_alpha_bar": np.sqrt(1 - ab),
        "sqrt_recip_alpha_bar": 1 / np.sqrt(ab),
        "sqrt_recipm1_alpha_bar": np.sqrt(1 / ab - 1),
        "posterior_variance": beta_tilde,
        "posterior_log_variance_clipped": np.log(np.concatenate([[beta_tilde[1]], beta_tilde[1:]])),
        "posterior_mean_coef_x0": b * np.sqrt(ab_prev) / (1 - ab),
        "posterior_mean_coef_xt": np.sqrt(a) * (1 - ab_prev) / (1 - ab),
        "snr": ab / (1 - ab),
    }
    for name, value in expected.items():
        got = getattr(sched, name)
        assert got.dtype == torch.float64 and got.shape == (len(b),), name
        np.testing.assert_allclose(got.numpy(), value, rtol=1e-10, atol=1e-300, err_msg=name)
    assert sched.posterior_variance[0].item() == 0.0
    assert sched.num_steps == len(b)


def test_single_step_schedule():
    sched = derive_schedule(torch.tensor([0.3], dtype=torch.float64))
    assert sched.posterior_variance.tolist() == [0.0]
    assert sched.posterior_log_variance_clipped.item() == pytest.approx(math.log(0.3))
    assert sched.posterior_mean_coef_x0.item() == pytest.approx(1.0)
    assert sched.posterior_mean_coef_xt.item() == pytest.approx(0.0)


def test_schedule_tensors_to_casts_every_field():
    sched = derive_schedule(linear_betas(10)).to(dtype=torch.float32)
    assert sched.alpha_bar.dtype == torch.float32 and sched.snr.dtype == torch.float32


# -- the process object ---------------------------------------------------------------------------


def test_build_process_and_protocol():
    process = build_process(ProcessConfig(schedule="cosine", num_steps=64, prediction="v",
                                          loss_weighting="min_snr", min_snr_gamma=3.0))
    assert isinstance(process, GaussianDiffusion) and isinstance(process, Process)
    assert process.num_steps == 64 and process.prediction == "v"
    assert process.loss_weighting == "min_snr" and process.min_snr_gamma == 3.0
    assert torch.equal(process.schedule.betas, cosine_betas(64, s=0.008))


def test_bad_process_arguments_raise_value_error_naming_the_value():
    with pytest.raises(ValueError, match="smear"):
        build_process(ProcessConfig(kind="smear"))
    with pytest.raises(ValueError, match="score"):
        GaussianDiffusion(linear_betas(10), prediction="score")
    with pytest.raises(ValueError, match="p2"):
        GaussianDiffusion(linear_betas(10), loss_weighting="p2")
    with pytest.raises(ValueError, match="-1"):
        GaussianDiffusion(linear_betas(10), min_snr_gamma=-1.0)


def test_q_sample_statistics():
    process = GaussianDiffusion(linear_betas(1000))
    n, t_index = 20_000, 300
    x0 = torch.tensor([-0.9, -0.2, 0.4, 1.0]).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    t = torch.full((n,), t_index)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=generator)
    x_t = process.q_sample(x0, t, noise).double()
    ab = float(process.schedule.alpha_bar[t_index])
    var = 1 - ab
    mean_tol = 4 * math.sqrt(var / n)
    var_tol = 4 * var * math.sqrt(2 / (n - 1))
    np.testing.assert_allclose(x_t.mean(0).numpy(), math.sqrt(ab) * x0[0].numpy(), atol=mean_tol)
    np.testing.assert_allclose(x_t.var(0).numpy(), np.full((1, 2, 2), var), atol=var_tol)
    mean, variance, log_variance = process.q_mean_variance(x0[:2], t[:2])
    np.testing.assert_allclose(mean.numpy(), math.sqrt(ab) * x0[:2].numpy(), rtol=1e-6)
    assert variance.shape == (2, 1, 1, 1)
    np.testing.assert_allclose(variance.flatten().numpy(), var, rtol=1e-5)
    np.testing.assert_allclose(log_variance.flatten().numpy(), math.log(var), rtol=1e-5)


@pytest.mark.parametrize("t_index", [1, 40, 700])
def test_posterior_reproduces_previous_marginal(t_index):
    # x_t ~ q(x_t | x0), then x_{t-1} ~ q(x_{t-1} | x_t, x0) must be distributed as q(x_{t-1} | x0).
    process = GaussianDiffusion(linear_betas(1000))
    n = 20_000
    x0 = torch.tensor([-0.7, 0.0, 0.3, 0.9], dtype=torch.float64).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    t = torch.full((n,), t_index)
    generator = torch.Generator().manual_seed(1)
    x_t = process.q_sample(x0, t, torch.randn(x0.shape, generator=generator, dtype=torch.float64))
    mean, variance, log_variance = process.q_posterior(x0, x_t, t)
    np.testing.assert_allclose(log_variance.exp().numpy(), variance.numpy(), rtol=1e-10)
    x_prev = mean + variance.sqrt() * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    ab_prev = float(process.schedule.alpha_bar[t_index - 1])
    var = 1 - ab_prev
    np.testing.assert_allclose(x_prev.mean(0).numpy(), math.sqrt(ab_prev) * x0[0].numpy(),
                               atol=4 * math.sqrt(var / n))
    np.testing.assert_allclose(x_prev.var(0).numpy(), np.full((1, 2, 2), var), atol=4 * var * math.sqrt(2 / n))


def test_posterior_at_first_index_is_the_clean_image():
    process = GaussianDiffusion(cosine_betas(100))
    x0 = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    t = torch.zeros(3, dtype=torch.long)
    x_t = process.q_sample(x0, t, torch.randn_like(x0))
    mean, variance, _ = process.q_posterior(x0, x_t, t)
    np.testing.assert_allclose(mean.numpy(), x0.numpy(), atol=1e-12)
    assert (variance == 0).all()


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(1000)], ids=["linear", "cosine"])
def test_training_target_round_trips_through_predict_x0_and_eps(prediction, betas):
    process = GaussianDiffusion(betas, prediction=prediction)
    generator = torch.Generator().manual_seed(2)
    t = torch.tensor([0, 1, 10, 250, 500, 900, 998, 999])
    for dtype in (torch.float64, torch.float32):
        x0 = torch.rand(8, 2, 4, 4, generator=generator, dtype=dtype) * 2 - 1
        noise = torch.randn(8, 2, 4, 4, generator=generator, dtype=dtype)
        x_t = process.q_sample(x0, t, noise)
        target = process.training_target(x0, noise, t)
        x0_hat, eps_hat = process.predict_x0_and_eps(target, x_t, t)
        assert x0_hat.dtype == dtype and eps_hat.dtype == dtype
        if dtype == torch.float64:
            torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(eps_hat, noise, atol=1e-5, rtol=1e-5)
        else:
            # In float32 the inversion is exact up to rounding of x_t amplified by the conversion's
            # condition number (1/sqrt(alpha_bar) for eps -> x0, 1/sqrt(1 - alpha_bar) for x0 -> eps).
            ab = process.schedule.alpha_bar[t].view(-1, 1, 1, 1)
            cond = torch.maximum(ab.rsqrt(), (1 - ab).rsqrt()).float()
            assert ((x0_hat - x0).abs() <= 1e-5 * cond).all()
            assert ((eps_hat - noise).abs() <= 1e-5 * cond).all()


def test_v_target_formula():
    process = GaussianDiffusion(linear_betas(100), prediction="v")
    x0, noise, t = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2), torch.tensor([3, 77])
    ab = process.schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(process.training_target(x0, noise, t), ab.sqrt() * noise - (1 - ab).sqrt() * x0)


def test_min_snr_weights_against_hand_values():
    # alpha_bar = [10/11, 2/3] -> snr = [10, 2]; gamma = 5.
    betas = torch.tensor([1 / 11, 4 / 15], dtype=torch.float64)
    t = torch.tensor([0, 1])
    expected = {"epsilon": [0.5, 1.0], "x0": [5.0, 2.0], "v": [5 / 11, 2 / 3]}
    for prediction, values in expected.items():
        process = GaussianDiffusion(betas, prediction=prediction, loss_weighting="min_snr", min_snr_gamma=5.0)
        np.testing.assert_allclose(process.schedule.snr.numpy(), [10.0, 2.0], rtol=1e-12)
        weight = process.loss_weight(t)
        assert weight.dtype == torch.float32
        np.testing.assert_allclose(weight.numpy(), values, rtol=1e-6)
        simple = GaussianDiffusion(betas, prediction=prediction).loss_weight(t)
        assert simple.tolist() == [1.0, 1.0]


def test_sample_timesteps_range_and_determinism():
    process = GaussianDiffusion(linear_betas(50))
    t1 = process.sample_timesteps(5000, "cpu", torch.Generator().manual_seed(3))
    t2 = process.sample_timesteps(5000, "cpu", torch.Generator().manual_seed(3))
    assert t1.dtype == torch.long and torch.equal(t1, t2)
    assert int(t1.min()) == 0 and int(t1.max()) == 49


class _OracleFromInputs:
    """Returns the exact training target, recomputed from the network's own inputs and the known x0."""

    def __init__(self, process: GaussianDiffusion, x0: torch.Tensor):
        self.process, self.x0 = process, x0

    def __call__(self, x_t, t, class_labels):
        ab = self.process.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        if self.process.prediction == "edm":  # the network is fed c_in x_t / sqrt(ab) (Karras et al. 2022, Table 1)
            x_t = x_t * (1 - ab + ab * self.process.sigma_data ** 2).sqrt()
        noise = (x_t.double() - ab.sqrt() * self.x0.double()) / (1 - ab).sqrt()
        return self.process.training_target(self.x0.double(), noise, t).to(x_t.dtype)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("weighting", ["simple", "min_snr"])
def test_training_losses_zero_for_oracle_positive_otherwise(prediction, weighting):
    process = GaussianDiffusion(linear_betas(200), prediction=prediction, loss_weighting=weighting)
    x0 = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1

    # 1. Replaying the generator: training_losses draws t, then noise, from it.
    replay = torch.Generator().manual_seed(5)
    t = process.sample_timesteps(16, "cpu", replay)
    noise = torch.randn(x0.shape, generator=replay, dtype=x0.dtype)
    target = process.training_target(x0, noise, t)
    labels = torch.arange(16) % 3
    seen = {}

    def replay_oracle(x_t, t_in, class_labels):
        seen["labels"] = class_labels
        assert torch.equal(t_in, t)
        return target

    losses = process.training_losses(replay_oracle, x0, labels, torch.Generator().manual_seed(5))
    assert losses.shape == (16,) and losses.dtype == torch.float32
    assert torch.count_nonzero(losses) == 0
    assert seen["labels"] is labels

    # 2. An oracle that knows only x0 and recomputes the target from (x_t, t).
    losses = process.training_losses(_OracleFromInputs(process, x0), x0, None, torch.Generator().manual_seed(6))
    assert losses.max().item() < 1e-12

    # 3. Explicit t and noise are used as given.
    losses = process.training_losses(lambda *_: target, x0, None, t=t, noise=noise)
    assert torch.count_nonzero(losses) == 0

    # 4. A wrong network is penalised, by exactly weight * MSE.
    zero = lambda x_t, t_in, c: torch.zeros_like(x_t)  # noqa: E731
    losses = process.training_losses(zero, x0, None, t=t, noise=noise)
    expected = target.pow(2).mean(dim=(1, 2, 3)).float() * process.loss_weight(t)
    assert (losses > 0).all()
    torch.testing.assert_close(losses, expected)


def test_input_perturbation_feeds_a_perturbed_state_and_keeps_the_target():
    """DDPM-IP (Ning et al. 2023, eq. 9) by hand: after t and noise the generator's next draw is xi, the
    network sees sqrt(ab) x0 + sqrt(1 - ab) (noise + 0.1 xi), and the target is still noise."""
    gamma = 0.1
    process = GaussianDiffusion(linear_betas(200), input_perturbation=gamma)
    x0 = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1
    replay = torch.Generator().manual_seed(5)
    t = process.sample_timesteps(8, "cpu", replay)
    noise = torch.randn(x0.shape, generator=replay, dtype=x0.dtype)
    xi = torch.randn(x0.shape, generator=replay, dtype=x0.dtype)
    ab = process.schedule.alpha_bar[t].view(-1, 1, 1, 1)
    expected_input = ab.sqrt() * x0 + (1 - ab).sqrt() * (noise + gamma * xi)
    seen = {}

    def recording(x_t, t_in, class_labels):
        seen["x_t"] = x_t
        return noise  # the exact epsilon target: loss 0 only if the target is not perturbed

    losses = process.training_losses(recording, x0, None, torch.Generator().manual_seed(5))
    torch.testing.assert_close(seen["x_t"], expected_input)
    assert torch.count_nonzero(losses) == 0
    # predicting the perturbed noise instead costs gamma^2 E[xi^2] per pixel
    perturbed = process.training_losses(lambda *_: noise + gamma * xi, x0, None, torch.Generator().manual_seed(5))
    torch.testing.assert_close(perturbed, (gamma * xi).pow(2).mean(dim=(1, 2, 3)).float())
    # gamma = 0 draws no xi and feeds the forward process itself
    plain = GaussianDiffusion(linear_betas(200))
    plain.training_losses(recording, x0, None, torch.Generator().manual_seed(5))
    torch.testing.assert_close(seen["x_t"], ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="input_perturbation"):
            GaussianDiffusion(linear_betas(10), input_perturbation=bad)
    with pytest.raises(ValueError, match="simple"):
        GaussianDiffusion(linear_betas(10), variance="learned_range", loss="hybrid", input_perturbation=0.1)


def test_training_losses_reproducible_with_generator_and_checks_output_shape():
    process = GaussianDiffusion(linear_betas(100))
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    network = lambda x_t, t, c: 0.5 * x_t  # noqa: E731
    a = process.training_losses(network, x0, None, torch.Generator().manual_seed(7))
    b = process.training_losses(network, x0, None, torch.Generator().manual_seed(7))
    c = process.training_losses(network, x0, None, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"\(4, 3, 4, 4\)"):
        process.training_losses(lambda x_t, t, c: x_t[..., :4, :4], x0, None)


def test_generator_on_wrong_device_is_reported():
    with pytest.raises(ValueError, match="meta"):
        check_generator(torch.Generator(), "meta")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_process_on_cuda_matches_cpu():
    process = GaussianDiffusion(cosine_betas(1000), prediction="v", loss_weighting="min_snr")
    x0 = torch.rand(8, 3, 8, 8) * 2 - 1
    noise, t = torch.randn_like(x0), torch.randint(0, 1000, (8,))
    cpu_xt = process.q_sample(x0, t, noise)
    gpu_xt = process.q_sample(x0.cuda(), t.cuda(), noise.cuda())
    assert gpu_xt.device.type == "cuda"
    torch.testing.assert_close(gpu_xt.cpu(), cpu_xt)
    network = lambda x_t, t_in, c: torch.zeros_like(x_t)  # noqa: E731
    losses = process.training_losses(network, x0.cuda(), None, torch.Generator(device="cuda").manual_seed(0))
    assert losses.device.type == "cuda" and losses.shape == (8,)
    with pytest.raises(ValueError, match="generator"):
        process.training_losses(network, x0.cuda(), None, torch.Generator().manual_seed(0))
