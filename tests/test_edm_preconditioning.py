"""EDM preconditioning (``prediction: edm``) and log-normal training noise levels (Karras et al. 2022).

The coefficients are checked against numbers worked out by hand, the parameterisation against its exact
inverse and against v-prediction (``sigma_data = 1`` makes EDM's ``F`` exactly ``-v``), the loss against
EDM's ``λ(σ) ||D - x0||²``, and every caller of the network (training, samplers, likelihood,
reconstruction) against the Gaussian oracle of ``test_sampling`` fed EDM's input ``c_in x̂``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamdata.config import ProcessConfig, config_from_dict, load_config
from dreamdata.errors import ConfigError
from dreamdata.process import GaussianDiffusion, build_process, cosine_betas, linear_betas
from dreamdata.process.edm import edm_loss_weight, edm_preconditioning
from dreamdata.sampling import ddim_sample, ddpm_sample, dpm_solver_pp_2m_sample, timestep_sequence
from test_sampling import MU, S, GaussianOracle

# alpha_bar = [0.8, 0.5] -> sigma = sqrt((1 - ab) / ab) = [0.5, 1.0]
TWO_STEP_BETAS = torch.tensor([0.2, 0.375], dtype=torch.float64)


def hand_sigma(process: GaussianDiffusion, t: torch.Tensor) -> torch.Tensor:
    ab = process.schedule.alpha_bar[t]
    return ((1 - ab) / ab).sqrt()


# -- the coefficients of Table 1 -----------------------------------------------------------------------


@pytest.mark.parametrize("sigma, sigma_data, c_skip, c_out, c_in, c_noise, weight", [
    # sigma^2 + sigma_data^2 = 0.5
    (0.5, 0.5, 0.5, 0.25 / math.sqrt(0.5), 1 / math.sqrt(0.5), -0.25 * math.log(2), 0.5 / 0.0625),
    # sigma^2 + sigma_data^2 = 4.25
    (2.0, 0.5, 1 / 17, 1 / math.sqrt(4.25), 1 / math.sqrt(4.25), 0.25 * math.log(2), 4.25),
    # sigma^2 + sigma_data^2 = 1.25
    (1.0, 0.5, 0.2, 0.5 / math.sqrt(1.25), 1 / math.sqrt(1.25), 0.0, 5.0),
    # sigma_data = 1, sigma = 3: sigma^2 + sigma_data^2 = 10
    (3.0, 1.0, 0.1, 3 / math.sqrt(10), 1 / math.sqrt(10), 0.25 * math.log(3), 10 / 9),
])
def test_preconditioning_and_loss_weight_against_hand_values(sigma, sigma_data, c_skip, c_out, c_in, c_noise,
                                                             weight):
    got = edm_preconditioning(torch.tensor([sigma], dtype=torch.float64), sigma_data)
    for name, expected in (("c_skip", c_skip), ("c_out", c_out), ("c_in", c_in), ("c_noise", c_noise)):
        assert float(getattr(got, name)) == pytest.approx(expected, rel=1e-12, abs=1e-15), name
    lam = float(edm_loss_weight(torch.tensor(sigma, dtype=torch.float64), sigma_data))
    assert lam == pytest.approx(weight, rel=1e-12)
    assert lam * c_out ** 2 == pytest.approx(1.0, rel=1e-12)  # λ c_out² = 1: the MSE on F is unweighted


def test_process_tables_are_table_1_at_the_schedule_sigmas():
    process = GaussianDiffusion(TWO_STEP_BETAS, prediction="edm", sigma_data=0.5)
    edm = process.edm
    np.testing.assert_allclose(edm.sigma.numpy(), [0.5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(edm.c_skip.numpy(), [0.5, 0.2], rtol=1e-12)
    np.testing.assert_allclose(edm.c_out.numpy(), [0.25 / math.sqrt(0.5), 0.5 / math.sqrt(1.25)], rtol=1e-12)
    np.testing.assert_allclose(edm.c_in.numpy(), [1 / math.sqrt(0.5), 1 / math.sqrt(1.25)], rtol=1e-12)
    np.testing.assert_allclose(edm.c_noise.numpy(), [-0.25 * math.log(2), 0.0], atol=1e-15)
    # the network input c_in x̂ = x_t / sqrt(1 - ab + ab sd²): 1 / sqrt(0.2 + 0.2) and 1 / sqrt(0.5 + 0.125)
    x_t = torch.ones(2, 1, 1, 1, dtype=torch.float64)
    scaled = process.network_input(x_t, torch.tensor([0, 1]))
    np.testing.assert_allclose(scaled.flatten().numpy(), [1 / math.sqrt(0.4), 1 / math.sqrt(0.625)], rtol=1e-12)
    # λ(σ_t) c_out(σ_t)² = 1 at every index of a real schedule, so loss_weighting=simple is EDM's weighting
    for betas in (linear_betas(1000), cosine_betas(1000)):
        full = GaussianDiffusion(betas, prediction="edm").edm
        np.testing.assert_allclose((edm_loss_weight(full.sigma, 0.5) * full.c_out ** 2).numpy(), 1.0, rtol=1e-10)


def test_other_predictions_feed_the_state_itself():
    for prediction in ("epsilon", "x0", "v"):
        process = GaussianDiffusion(TWO_STEP_BETAS, prediction=prediction)
        x_t = torch.randn(2, 1, 2, 2)
        assert process.network_input(x_t, torch.tensor([0, 1])) is x_t
        assert process.edm is None


# -- the parameterisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(1000)], ids=["linear", "cosine"])
@pytest.mark.parametrize("sigma_data", [0.5, 0.2])
def test_the_ideal_F_makes_D_the_clean_image(betas, sigma_data):
    process = GaussianDiffusion(betas, prediction="edm", sigma_data=sigma_data)
    generator = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 1, 10, 250, 500, 900, 998, 999])
    x0 = torch.rand(8, 2, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(8, 2, 4, 4, generator=generator, dtype=torch.float64)
    x_t = process.q_sample(x0, t, noise)
    # the target written as in the paper, from hand-computed coefficients: F* = (x0 - c_skip x̂) / c_out
    ab = process.schedule.alpha_bar[t].view(-1, 1, 1, 1)
    sigma2 = (1 - ab) / ab
    sd2 = sigma_data ** 2
    c_skip, c_out = sd2 / (sigma2 + sd2), (sigma2 * sd2 / (sigma2 + sd2)).sqrt()
    x_hat = x_t / ab.sqrt()
    ideal = (x0 - c_skip * x_hat) / c_out
    target = process.training_target(x0, noise, t)
    torch.testing.assert_close(target, ideal, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(c_skip * x_hat + c_out * target, x0, rtol=1e-9, atol=1e-9)  # D(x̂) = x0 (eq. 7)
    x0_hat, eps_hat = process.predict_x0_and_eps(target, x_t, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_hat, noise, rtol=1e-9, atol=1e-9)
    # any F: eps_hat is consistent with x_t, x_t = sqrt(ab) x0_hat + sqrt(1 - ab) eps_hat
    other = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x0_hat, eps_hat = process.predict_x0_and_eps(other, x_t, t)
    torch.testing.assert_close(ab.sqrt() * x0_hat + (1 - ab).sqrt() * eps_hat, x_t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x0_hat, c_skip * x_hat + c_out * other, rtol=1e-9, atol=1e-9)
    # float32: finite and close to the float64 values everywhere on the schedule
    f32 = process.predict_x0_and_eps(target.float(), x_t.float(), t)
    assert all(torch.isfinite(value).all() for value in f32)
    torch.testing.assert_close(f32[0].double(), x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(200)], ids=["linear", "cosine"])
def test_sigma_data_one_is_v_prediction_with_the_sign_flipped(betas):
    # sd = 1: c_skip = ab, c_out = sqrt(1 - ab), c_in x̂ = x_t, so x0 = sqrt(ab) x_t + sqrt(1 - ab) F = ... - ... v
    edm = GaussianDiffusion(betas, prediction="edm", sigma_data=1.0)
    v = GaussianDiffusion(betas, prediction="v")
    generator = torch.Generator().manual_seed(1)
    t = torch.randint(0, betas.numel(), (16,), generator=generator)
    x_t = torch.randn(16, 3, 2, 2, generator=generator, dtype=torch.float64)
    out = torch.randn(16, 3, 2, 2, generator=generator, dtype=torch.float64)
    for edm_value, v_value in zip(edm.predict_x0_and_eps(-out, x_t, t), v.predict_x0_and_eps(out, x_t, t)):
        torch.testing.assert_close(edm_value, v_value, rtol=1e-10, atol=1e-10)
    x0, noise = torch.rand_like(x_t) * 2 - 1, torch.randn_like(x_t)
    torch.testing.assert_close(edm.training_target(x0, noise, t), -v.training_target(x0, noise, t),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(edm.network_input(x_t, t), x_t, rtol=1e-12, atol=1e-12)
    for weighting in ("simple", "min_snr"):
        a = GaussianDiffusion(betas, prediction="edm", sigma_data=1.0, loss_weighting=weighting).loss_weight(t)
        b = GaussianDiffusion(betas, prediction="v", loss_weighting=weighting).loss_weight(t)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_the_loss_is_lambda_weighted_denoiser_error_which_is_the_plain_mse_on_F():
    process = GaussianDiffusion(cosine_betas(100), prediction="edm", sigma_data=0.5)
    generator = torch.Generator().manual_seed(2)
    x0 = torch.rand(6, 1, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 5, 20, 50, 80, 99])
    seen = {}

    def network(x_in, t_in, labels):  # F = a fixed function of its input
        seen["input"], seen["t"] = x_in, t_in
        return 0.3 * x_in - 0.1

    loss = process.training_losses(network, x0, None, t=t, noise=noise)
    ab = process.schedule.alpha_bar[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    torch.testing.assert_close(seen["input"], x_t / (1 - ab + ab * 0.25).sqrt())  # c_in x̂, by hand
    assert torch.equal(seen["t"], t)  # the time input stays the index t
    F = 0.3 * seen["input"] - 0.1
    sigma = ((1 - ab) / ab).sqrt().flatten()
    c_skip = 0.25 / (sigma ** 2 + 0.25)
    c_out = sigma * 0.5 / (sigma ** 2 + 0.25).sqrt()
    D = c_skip.view(-1, 1, 1, 1) * x_t / ab.sqrt() + c_out.view(-1, 1, 1, 1) * F  # eq. 7
    lam = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2  # Table 1
    edm_loss = lam * (D - x0).pow(2).mean(dim=(1, 2, 3))  # eq. 8
    target = (x0 - c_skip.view(-1, 1, 1, 1) * x_t / ab.sqrt()) / c_out.view(-1, 1, 1, 1)
    plain_mse = (F - target).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(edm_loss, plain_mse, rtol=1e-9, atol=0)
    torch.testing.assert_close(loss, plain_mse.float(), rtol=1e-5, atol=1e-6)
    assert process.loss_weight(t).tolist() == [1.0] * 6


def test_min_snr_for_edm_is_min_snr_times_the_x0_error():
    process = GaussianDiffusion(TWO_STEP_BETAS, prediction="edm", loss_weighting="min_snr", min_snr_gamma=2.0)
    # snr = ab / (1 - ab) = [4, 1] -> min(snr, 2) = [2, 1]; c_out² = [0.125, 0.2]
    np.testing.assert_allclose(process.loss_weight(torch.tensor([0, 1])).numpy(), [0.25, 0.2], rtol=1e-6)


# -- log-normal noise levels -----------------------------------------------------------------------------


def test_uniform_default_draws_exactly_what_it_drew_before():
    for process in (GaussianDiffusion(linear_betas(1000)), GaussianDiffusion(cosine_betas(50), prediction="edm")):
        assert process.timestep_distribution == "uniform"
        got = process.sample_timesteps(4096, "cpu", torch.Generator().manual_seed(3))
        expected = torch.randint(0, process.num_steps, (4096,), generator=torch.Generator().manual_seed(3))
        assert torch.equal(got, expected)


@pytest.mark.parametrize("mean, std", [(-1.2, 1.2), (0.0, 1.0), (0.5, 0.6)])
def test_lognormal_timesteps_follow_ln_sigma_normal(mean, std):
    # linear, T = 1000: ln sigma_t runs from ln 0.01 = -4.6 to +5.06, so the tails clip little
    process = GaussianDiffusion(linear_betas(1000), timestep_distribution="lognormal", lognormal_mean=mean,
                                lognormal_std=std)
    generator = torch.Generator().manual_seed(4)
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    n = 200_000
    t = process.sample_timesteps(n, "cpu", generator)
    assert t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) <= 999
    assert torch.equal(process.sample_timesteps(n, "cpu", copy), t)  # reproducible from a generator copy
    log_sigma = hand_sigma(process, t).log()
    assert float(log_sigma.mean()) == pytest.approx(mean, abs=0.02)
    assert float(log_sigma.std()) == pytest.approx(std, abs=0.02)


def test_lognormal_timesteps_are_the_nearest_index_in_log_sigma():
    process = GaussianDiffusion(cosine_betas(200), timestep_distribution="lognormal")
    generator = torch.Generator().manual_seed(5)
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    t = process.sample_timesteps(5000, "cpu", generator)
    drawn = -1.2 + 1.2 * torch.randn(5000, generator=copy).double()  # ln σ ~ N(P_mean, P_std²), EDM Table 1
    table = hand_sigma(process, torch.arange(200)).log()
    nearest = (drawn[:, None] - table[None, :]).abs().argmin(dim=1)
    # float32 rounding can move a draw within ~1e-7 of a midpoint to its neighbour: allow a rare off-by-one
    assert (t - nearest).abs().max() <= 1 and int((t != nearest).sum()) <= 2
    # far outside the schedule's range the draw clamps to its ends
    low = GaussianDiffusion(cosine_betas(200), timestep_distribution="lognormal", lognormal_mean=-50.0)
    high = GaussianDiffusion(cosine_betas(200), timestep_distribution="lognormal", lognormal_mean=50.0)
    assert low.sample_timesteps(100, "cpu", torch.Generator().manual_seed(0)).tolist() == [0] * 100
    assert high.sample_timesteps(100, "cpu", torch.Generator().manual_seed(0)).tolist() == [199] * 100


def test_training_draws_t_from_the_lognormal_distribution_then_noise():
    process = GaussianDiffusion(cosine_betas(100), prediction="edm", timestep_distribution="lognormal")
    x0 = torch.rand(8, 1, 2, 2) * 2 - 1
    replay = torch.Generator().manual_seed(6)
    t = process.sample_timesteps(8, "cpu", replay)
    noise = torch.randn(x0.shape, generator=replay)
    seen = {}

    def network(x_in, t_in, labels):
        seen["t"] = t_in
        return torch.zeros_like(x_in)

    loss = process.training_losses(network, x0, None, torch.Generator().manual_seed(6))
    assert torch.equal(seen["t"], t)
    torch.testing.assert_close(loss, process.training_losses(network, x0, None, t=t, noise=noise))


# -- every caller of the network: samplers, likelihood, reconstruction -----------------------------------


@pytest.mark.parametrize("sampler", [ddim_sample, ddpm_sample, dpm_solver_pp_2m_sample])
def test_samplers_with_the_edm_oracle_match_the_epsilon_oracle(sampler):
    results = {}
    for prediction in ("epsilon", "edm"):
        process = GaussianDiffusion(cosine_betas(200), prediction=prediction, sigma_data=0.4)
        network = GaussianOracle(process, MU.unsqueeze(0), S, prediction=prediction)
        generator = torch.Generator().manual_seed(7)
        noise = torch.randn((64, 1, 2, 2), generator=generator)
        results[prediction] = sampler(network, process, noise, timestep_sequence(200, 10), generator=generator,
                                      x0_clip="none")
    torch.testing.assert_close(results["edm"], results["epsilon"], atol=1e-4, rtol=1e-4)


def test_the_bound_with_the_edm_oracle_matches_the_epsilon_oracle():
    from dreamdata.evaluation.likelihood import vlb_terms

    x0 = (MU + S * torch.randn((16, 1, 2, 2), generator=torch.Generator().manual_seed(8))).double()
    terms = {}
    for prediction in ("epsilon", "edm"):
        process = GaussianDiffusion(cosine_betas(50), prediction=prediction)
        network = GaussianOracle(process, MU.unsqueeze(0).double(), S.double(), prediction=prediction)
        terms[prediction] = vlb_terms(network, process, x0, None, torch.arange(1, 50),
                                      generator=torch.Generator().manual_seed(9), x0_clip="none", discretized=False)
    for name in ("prior", "kl", "decoder"):
        torch.testing.assert_close(getattr(terms["edm"], name), getattr(terms["epsilon"], name),
                                   rtol=1e-8, atol=1e-10)


def test_reconstruction_with_the_edm_point_mass_oracle_is_exact():
    from dreamdata.evaluation.reconstruction import reconstruction_metrics

    process = GaussianDiffusion(cosine_betas(100), prediction="edm")
    clean = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 1, 16, 16), dtype=np.uint8))
    target = clean[:1].float() / 127.5 - 1

    class PointMassOracle(torch.nn.Module):
        """Data = one image, so E[x0 | x_t] = target and the ideal F = (target - c_skip x̂) / c_out."""

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x_in, t, labels):
            ab = process.schedule.alpha_bar.to(x_in)[t].view(-1, 1, 1, 1)
            x_t = x_in * (1 - ab + ab * 0.25).sqrt()
            sigma2 = (1 - ab) / ab
            c_skip, c_out = 0.25 / (sigma2 + 0.25), (sigma2 * 0.25 / (sigma2 + 0.25)).sqrt()
            return (target - c_skip * x_t / ab.sqrt()) / c_out

    result = reconstruction_metrics(PointMassOracle(), process, clean[:1].repeat(4, 1, 1, 1), ddim_steps=10,
                                    batch_size=4, buckets=[(0, 9), (10, 49), (50, 99)])
    for bucket in result["buckets"]:
        assert bucket["eps_mse"] < 1e-6 and bucket["rmse"] < 1e-4


# -- config, checkpoints, a tiny end-to-end run ---------------------------------------------------------


def test_config_builds_the_process_and_old_configs_are_unchanged():
    process = build_process(ProcessConfig(schedule="cosine", num_steps=64, prediction="edm", sigma_data=0.3,
                                          timestep_distribution="lognormal", lognormal_mean=-0.5, lognormal_std=0.8))
    assert (process.prediction, process.sigma_data, process.timestep_distribution) == ("edm", 0.3, "lognormal")
    assert (process.lognormal_mean, process.lognormal_std) == (-0.5, 0.8)
    assert "sigma_data=0.3" in repr(process) and "timestep_distribution='lognormal'" in repr(process)
    tree = load_config("tiny").to_dict()
    for key in ("sigma_data", "timestep_distribution", "lognormal_mean", "lognormal_std"):
        del tree["process"][key]
    p = config_from_dict(tree).process  # a run directory written before the keys existed
    assert (p.sigma_data, p.timestep_distribution, p.lognormal_mean, p.lognormal_std) == (0.5, "uniform", -1.2, 1.2)
    assert build_process(p).timestep_distribution == "uniform"


@pytest.mark.parametrize("overrides, message", [
    (["process.prediction=score"], "process.prediction: 'score' is not one of epsilon, x0, v, edm"),
    (["process.timestep_distribution=gamma"],
     "process.timestep_distribution: 'gamma' is not one of uniform, lognormal"),
    (["process.sigma_data=0"], "process.sigma_data: expected a data standard deviation sigma_data > 0, got 0.0"),
    (["process.sigma_data=-0.5"], "process.sigma_data"),
    (["process.lognormal_std=0"], "process.lognormal_std: expected a standard deviation P_std > 0"),
    (["process.lognormal_mean=low"], "process.lognormal_mean: expected float, got 'low'"),
    (["process.lognormal_mean=.nan"], "process.lognormal_mean: expected a finite number"),
    (["process.loss=vlb", "process.importance_sampling=true", "process.timestep_distribution=lognormal"],
     "process.timestep_distribution: lognormal cannot be combined with process.importance_sampling=true"),
    (["process.kind=blur", "process.timestep_distribution=lognormal"],
     "process.timestep_distribution: lognormal applies to process.kind=gaussian only"),
])
def test_bad_values_are_one_line_config_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        load_config("tiny", overrides)
    assert "\n" not in str(caught.value)


def test_bad_constructor_arguments_raise_value_errors():
    for kwargs, message in ((dict(sigma_data=0.0), "sigma_data"), (dict(timestep_distribution="beta"), "beta"),
                            (dict(lognormal_std=-1.0), "lognormal_std"),
                            (dict(loss="vlb", importance_sampling=True, timestep_distribution="lognormal"),
                             "importance sampling")):
        with pytest.raises(ValueError, match=message):
            GaussianDiffusion(linear_betas(10), **kwargs)


def test_tiny_edm_lognormal_run_trains_reloads_and_samples(tiny_overrides):
    from dreamdata.training.pretrained import load_trained
    from dreamdata.training.run_dir import read_metrics
    from dreamdata.training.trainer import train

    overrides = tiny_overrides + ["process.prediction=edm", "process.timestep_distribution=lognormal",
                                  "train.steps=4", "train.log_every=2", "train.val_every=4",
                                  "train.sample_grid=false", "train.checkpoint_every=0"]
    config = load_config("tiny", overrides)
    run = train(config)
    records = read_metrics(run.run_dir)
    assert records and all(math.isfinite(r["loss"]) for r in records)
    model = load_trained(run.run_dir)  # the run directory's config rebuilds the same process
    assert isinstance(model.process, GaussianDiffusion)
    assert repr(model.process) == repr(GaussianDiffusion.from_config(config.process))
    assert (model.process.prediction, model.process.timestep_distribution) == ("edm", "lognormal")
    noise = torch.randn((3, model.network.in_channels, model.network.image_size, model.network.image_size),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = ddim_sample(model.network, model.process, noise, timestep_sequence(model.process.num_steps, 5),
                             class_labels=torch.tensor([0, 1, 2]), guidance_scale=1.0,
                             generator=torch.Generator().manual_seed(1))
    assert images.shape == noise.shape and torch.isfinite(images).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_edm_lognormal_on_cuda_matches_cpu():
    process = GaussianDiffusion(cosine_betas(1000), prediction="edm", timestep_distribution="lognormal")
    t = process.sample_timesteps(4096, "cuda", torch.Generator(device="cuda").manual_seed(0))
    assert t.device.type == "cuda" and t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) <= 999
    x0 = torch.rand(8, 3, 8, 8) * 2 - 1
    noise, t = torch.randn_like(x0), t[:8].cpu()
    network = lambda x_in, t_in, c: 0.5 * x_in  # noqa: E731
    cpu = process.training_losses(network, x0, None, t=t, noise=noise)
    gpu = process.training_losses(network, x0.cuda(), None, t=t.cuda(), noise=noise.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu)
