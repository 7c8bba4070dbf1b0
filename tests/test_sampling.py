"""Tests of the DDPM sampler against Gaussian data, whose optimal denoiser is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dreamdata.process import GaussianDiffusion, cosine_betas, linear_betas
from dreamdata.sampling import (
    class_grid,
    ddpm_sample,
    grid_labels,
    respaced_betas,
    save_grid,
    timestep_sequence,
)
from dreamdata.sampling.timesteps import check_timesteps

T = 1000
# Per-pixel data distribution x0 ~ N(MU, S^2), shape [1, 1, 2, 2]; |MU| + 4 S stays near [-1, 1].
MU = torch.tensor([-0.3, 0.1, 0.4, 0.0]).view(1, 1, 2, 2)
S = torch.tensor([0.2, 0.3, 0.15, 0.25]).view(1, 1, 2, 2)



class GaussianOracle:
    """The exact minimiser of each training loss for data ``x0 ~ N(mu[label], s^2)`` (per pixel).

    ``x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab)``, so ``E[eps | x_t] = sqrt(1 - ab)(x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)``
    and ``E[x0 | x_t] = mu + s^2 sqrt(ab)(x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)``.
    ``mus`` is ``[K, 1, C, H, W]``; the label indexes it (``None`` uses ``mus[0]``).

    ``prediction="edm"``: the network is fed ``c_in x̂ = x_t / sqrt(1 - ab + ab sd²)`` and outputs
    ``F = (E[x0 | x_t] - c_skip x̂) / c_out`` with ``x̂ = x_t / sqrt(ab)``, ``σ² = (1 - ab) / ab``,
    ``c_skip = sd² / (σ² + sd²)`` and ``c_out = σ sd / sqrt(σ² + sd²)`` (Karras et al. 2022, Table 1), written
    out here independently of the process's own tables.
    """

    def __init__(self, process, mus, s, prediction="epsilon", null_class=None):
        self.alpha_bar = process.schedule.alpha_bar
        self.sigma_data = getattr(process, "sigma_data", 0.5)
        self.mus, self.s, self.prediction = mus, s, prediction
        if null_class is not None:
            self.null_class = null_class
        self.batch_sizes = []

    def __call__(self, x, t, class_labels):
        self.batch_sizes.append(x.shape[0])
        ab = self.alpha_bar[t].view(-1, 1, 1, 1).to(x.dtype)
        mu = self.mus[0] if class_labels is None else self.mus[class_labels].squeeze(1)
        s2 = self.s ** 2
        sd2 = self.sigma_data ** 2
        if self.prediction == "edm":
            x = x * (1 - ab + ab * sd2).sqrt()  # undo c_in x̂: back to the state x_t
        residual = (x - ab.sqrt() * mu) / (ab * s2 + 1 - ab)
        if self.prediction == "epsilon":
            return (1 - ab).sqrt() * residual
        x0 = mu + s2 * ab.sqrt() * residual
        if self.prediction == "x0":
            return x0
        if self.prediction == "edm":
            sigma2 = (1 - ab) / ab
            c_skip, c_out = sd2 / (sigma2 + sd2), (sigma2 * sd2 / (sigma2 + sd2)).sqrt()
            return (x0 - c_skip * x / ab.sqrt()) / c_out
        return ab.sqrt() * (1 - ab).sqrt() * residual - (1 - ab).sqrt() * x0  # v = sqrt(ab) eps - sqrt(1-ab) x0


def predicted_moments(taus_descending, mu, s, variance):
    """Exact mean and variance of the sampler's output for Gaussian data and the oracle, by propagating a
    scalar Gaussian through the respaced chain - an independent float64 re-derivation in numpy."""
    ab_full = np.cumprod(1 - np.linspace(1e-4, 0.02, T))
    taus = np.sort(np.asarray(taus_descending))
    ab = ab_full[taus]
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    beta = 1 - ab / ab_prev
    beta_tilde = (1 - ab_prev) / (1 - ab) * beta
    c0 = beta * np.sqrt(ab_prev) / (1 - ab)
    c1 = np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
    mean, var = np.zeros_like(mu), np.ones_like(mu)  # x_T ~ N(0, 1)
    for j in range(len(taus) - 1, -1, -1):
        gain = s ** 2 * np.sqrt(ab[j]) / (ab[j] * s ** 2 + 1 - ab[j])  # x0_hat = mu + gain (x - sqrt(ab) mu)
        slope = c0[j] * gain + c1[j]
        mean = slope * mean + c0[j] * (mu - gain * np.sqrt(ab[j]) * mu)
        noise_var = 0.0 if j == 0 else (beta_tilde[j] if variance == "beta_tilde" else beta[j])
        var = slope ** 2 * var + noise_var
    return mean, var


@pytest.fixture(scope="module")
def process():
    return GaussianDiffusion(linear_betas(T, 1e-4, 0.02))


@pytest.mark.parametrize("num_steps", [1000, 100])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_sampler_reproduces_gaussian_data(process, num_steps, variance):
    n = 8000
    taus = timestep_sequence(T, num_steps)
    network = GaussianOracle(process, MU.unsqueeze(0), S)
    generator = torch.Generator().manual_seed(10)
    noise = torch.randn((n, 1, 2, 2), generator=generator)
    x = ddpm_sample(network, process, noise, taus, generator=generator, variance=variance, x0_clip="none")
    assert x.shape == noise.shape and torch.isfinite(x).all()
    assert network.batch_sizes == [n] * num_steps

    mu, s = MU[0].double().numpy(), S[0].double().numpy()
    pred_mean, pred_var = predicted_moments(taus.numpy(), mu, s, variance)
    # The reverse chain's mean is exact for the optimal model at any number of steps (up to the start x_T).
    np.testing.assert_allclose(pred_mean, mu, atol=1e-5)  # x_T ~ N(0, I) vs N(sqrt(ab_T) mu, .): forgotten
    # Its variance is not: beta_tilde (the posterior variance for a known x0) under-disperses and beta
    # over-disperses, by a discretisation error that shrinks with the step count (Ho et al. sec. 3.2).
    rel_error = pred_var / s ** 2 - 1
    if variance == "beta_tilde":
        assert (rel_error < 0).all()
    else:
        assert (rel_error > 0).all()
    assert np.abs(rel_error).max() < (0.06 if num_steps == 1000 else 0.35)

    sample_mean = x.double().mean(0).numpy()
    sample_var = x.double().var(0).numpy()
    np.testing.assert_allclose(sample_mean, mu, atol=4 * np.sqrt(pred_var / n).max())
    np.testing.assert_allclose(sample_var, pred_var, rtol=4 * math.sqrt(2 / (n - 1)))
    if num_steps == 1000:  # at full length the samples match the data distribution itself
        np.testing.assert_allclose(sample_var, s ** 2, rtol=4 * math.sqrt(2 / (n - 1)) + 0.06)


@pytest.mark.parametrize("prediction", ["x0", "v", "edm"])
def test_parameterisations_give_the_same_samples(prediction):
    results = {}
    for pred in ("epsilon", prediction):
        process = GaussianDiffusion(linear_betas(T), prediction=pred)
        network = GaussianOracle(process, MU.unsqueeze(0), S, prediction=pred)
        generator = torch.Generator().manual_seed(11)
        noise = torch.randn((512, 1, 2, 2), generator=generator)
        results[pred] = ddpm_sample(network, process, noise, timestep_sequence(T, 50), generator=generator,
                                    x0_clip="none")
    torch.testing.assert_close(results[prediction], results["epsilon"], atol=1e-4, rtol=1e-4)


def test_classifier_free_guidance_moves_the_mean_as_predicted(process):
    # Class c has mean mus[c]; the null class (2) has mean mus[2]. Guided eps is then the oracle of
    # N((1 + w) mu_c - w mu_null, s^2), so the guided samples have that mean.
    mus = torch.stack([MU, -MU, torch.zeros_like(MU)])
    w, n = 1.5, 4000
    network = GaussianOracle(process, mus, S, null_class=2)
    labels = grid_labels(2, n)
    generator = torch.Generator().manual_seed(12)
    noise = torch.randn((2 * n, 1, 2, 2), generator=generator)
    taus = timestep_sequence(T, 50)
    x = ddpm_sample(network, process, noise, taus, class_labels=labels, guidance_scale=w,
                    generator=generator, x0_clip="none")
    assert network.batch_sizes == [4 * n] * 50  # conditional and unconditional halves in one pass
    _, pred_var = predicted_moments(taus.numpy(), MU[0].double().numpy(), S[0].double().numpy(), "beta_tilde")
    for c in (0, 1):
        expected = ((1 + w) * mus[c] - w * mus[2])[0].double().numpy()
        np.testing.assert_allclose(x[labels == c].double().mean(0).numpy(), expected,
                                   atol=4 * np.sqrt(pred_var / n).max())


def test_guidance_zero_is_the_conditional_sampler(process):
    mus = torch.stack([MU, -MU, torch.zeros_like(MU)])
    labels = torch.tensor([0, 1, 1, 0])
    noise = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(13))
    with_null = GaussianOracle(process, mus, S, null_class=2)
    conditional_only = GaussianOracle(process, mus, S)
    taus = timestep_sequence(T, 20)
    a = ddpm_sample(with_null, process, noise, taus, class_labels=labels, guidance_scale=0.0,
                    generator=torch.Generator().manual_seed(14))
    b = ddpm_sample(conditional_only, process, noise, taus, class_labels=labels,
                    generator=torch.Generator().manual_seed(14))
    assert torch.equal(a, b)
    assert with_null.batch_sizes == [4] * 20  # no doubled batch at w = 0


def test_guidance_needs_labels_and_a_null_class(process):
    noise = torch.randn(2, 1, 2, 2)
    network = GaussianOracle(process, MU.unsqueeze(0), S)
    with pytest.raises(ValueError, match="null_class=None"):
        ddpm_sample(network, process, noise, [5, 0], class_labels=torch.zeros(2, dtype=torch.long),
                    guidance_scale=1.0)
    with pytest.raises(ValueError, match="class_labels=None"):
        ddpm_sample(network, process, noise, [5, 0], guidance_scale=1.0, null_class=0)


def test_sampling_is_deterministic_given_the_generator_and_finite(process):
    cosine = GaussianDiffusion(cosine_betas(T))
    network = GaussianOracle(cosine, MU.unsqueeze(0), S)
    noise = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(15))

    def run(seed, **kwargs):
        return ddpm_sample(network, cosine, noise, timestep_sequence(T, 30),
                           generator=torch.Generator().manual_seed(seed), **kwargs)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all() and a.abs().max() <= 1.0
    # full-length cosine chain (alpha_bar_T ~ 1e-9) with a useless network: still finite and clipped
    x = ddpm_sample(lambda x, t, c: torch.zeros_like(x), cosine, noise, generator=torch.Generator().manual_seed(3),
                    variance="beta")
    assert torch.isfinite(x).all() and x.abs().max() <= 1.0


def test_sampler_leaves_autograd_usable(process):
    x = ddpm_sample(lambda x, t, c: torch.zeros_like(x), process, torch.randn(2, 1, 2, 2), [10, 0])
    assert not x.requires_grad and not x.is_inference()
    weight = torch.ones(1, requires_grad=True)
    (x * weight).sum().backward()  # samples can feed a training step
    assert weight.grad is not None


def test_bad_sampler_arguments(process):
    noise = torch.randn(2, 1, 2, 2)
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="'fixed'"):
        ddpm_sample(zero, process, noise, variance="fixed")
    with pytest.raises(ValueError, match="descending"):
        ddpm_sample(zero, process, noise, [0, 10])
    with pytest.raises(ValueError, match="1000"):
        ddpm_sample(zero, process, noise, [1000, 0])
    with pytest.raises(ValueError, match=r"\(2, 1, 1, 1\)"):
        ddpm_sample(lambda x, t, c: x[..., :1, :1], process, noise, [3, 0])


# -- timesteps ------------------------------------------------------------------------------------


@pytest.mark.parametrize("train, sample", [(1000, 1000), (1000, 100), (1000, 7), (1000, 2), (10, 3), (5, 4), (1, 1)])
def test_timestep_sequence_properties(train, sample):
    steps = timestep_sequence(train, sample)
    assert steps.dtype == torch.long and steps.shape == (sample,)
    assert steps[0].item() == train - 1 and steps[-1].item() == (0 if sample > 1 else train - 1)
    assert (steps[1:] < steps[:-1]).all()  # strictly descending, hence unique
    assert len(set(steps.tolist())) == sample
    assert torch.equal(check_timesteps(steps, train), steps)
    if sample > 1:
        gaps = -steps.diff().double()
        assert gaps.max() - gaps.min() <= 1  # evenly strided up to rounding


def test_timestep_sequence_single_step_and_errors():
    assert timestep_sequence(1000, 1).tolist() == [999]
    assert timestep_sequence(1000, 1000).tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError, match="1001"):
        timestep_sequence(1000, 1001)
    with pytest.raises(ValueError, match="0"):
        timestep_sequence(1000, 0)


def test_respaced_betas_reproduce_alpha_bar_at_chosen_steps(process):
    alpha_bar = process.schedule.alpha_bar
    taus = timestep_sequence(T, 37)
    betas = respaced_betas(alpha_bar, taus)
    np.testing.assert_allclose(torch.cumprod(1 - betas, 0).numpy(), alpha_bar[taus.flip(0)].numpy(), rtol=1e-12)
    full = respaced_betas(alpha_bar, timestep_sequence(T, T))
    np.testing.assert_allclose(full.numpy(), process.schedule.betas.numpy(), rtol=1e-9)


@pytest.mark.parametrize("taus", [[1999], [1999, 0], [1999, 1000, 0], [1999, 1998, 3, 0]])
def test_respaced_posterior_is_ho_eq_7_from_alpha_bar_even_when_beta_rounds_to_one(taus):
    """Constant beta = 0.02 for T = 2000: the jump from index 1999 to 0 has beta' = 1 - 0.98 ** 1999 = 1 - 3e-18,
    which is 1 in float64. The posterior is built from alpha_bar_t = 0.98 ** (t + 1) directly (closed form)."""
    from dreamdata.process import constant_betas
    from dreamdata.sampling.timesteps import respaced_posterior

    chain = respaced_posterior(GaussianDiffusion(constant_betas(2000, 0.02)).schedule.alpha_bar, torch.tensor(taus))
    ab = 0.98 ** (np.sort(taus) + 1.0)  # alpha_bar at the chosen indices, ascending
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    beta = 1 - ab / ab_prev
    expected = {"betas": beta, "posterior_variance": (1 - ab_prev) / (1 - ab) * beta,  # Ho et al. 2020, eq. 7
                "posterior_mean_coef_x0": np.sqrt(ab_prev) * beta / (1 - ab),
                "posterior_mean_coef_xt": np.sqrt(ab / ab_prev) * (1 - ab_prev) / (1 - ab)}
    for name, value in expected.items():
        got = getattr(chain, name)
        assert got.dtype == torch.float64 and torch.isfinite(got).all(), name
        np.testing.assert_allclose(got.numpy(), value, rtol=1e-9, atol=0, err_msg=name)
    assert chain.posterior_variance[0] == 0 and chain.posterior_mean_coef_x0[0] == pytest.approx(1.0)


def test_respaced_posterior_agrees_with_the_schedule_of_the_respaced_betas(process):
    from dreamdata.process import derive_schedule
    from dreamdata.sampling.timesteps import respaced_posterior

    taus = timestep_sequence(T, 37)
    chain = respaced_posterior(process.schedule.alpha_bar, taus)
    reference = derive_schedule(respaced_betas(process.schedule.alpha_bar, taus))
    for name in ("betas", "posterior_variance", "posterior_mean_coef_x0", "posterior_mean_coef_xt"):
        np.testing.assert_allclose(getattr(chain, name).numpy(), getattr(reference, name).numpy(), rtol=1e-10,
                                   err_msg=name)


@pytest.mark.parametrize("steps", [1, 2])
def test_respaced_ddpm_survives_a_jump_whose_beta_rounds_to_one(steps):
    """With the exact denoiser of one fixed image x*, DDPM through 1 or 2 steps of a T = 2000 constant-beta
    chain returns x* (it used to fail: the jump's beta' is 1 in float64)."""
    from dreamdata.process import constant_betas

    process = GaussianDiffusion(constant_betas(2000, 0.02))
    target = torch.tensor([[-0.5, 0.25], [0.75, -1.0]], dtype=torch.float64).view(1, 1, 2, 2)
    ab = process.schedule.alpha_bar

    def oracle(x, t, labels):  # eps = (x_t - sqrt(ab) x*) / sqrt(1 - ab): exact for data = {x*}
        a = ab[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * target) / (1 - a).sqrt()

    noise = torch.randn((3, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for variance in ("beta_tilde", "beta"):
        samples = ddpm_sample(oracle, process, noise, timestep_sequence(2000, steps), x0_clip="none",
                              generator=torch.Generator().manual_seed(1), variance=variance)
        torch.testing.assert_close(samples, target.expand(3, 1, 2, 2), rtol=0, atol=1e-6)


# -- grids ----------------------------------------------------------------------------------------


def test_save_grid_writes_expected_size_atomically(tmp_path):
    images = torch.linspace(-1, 1, 10).view(10, 1, 1, 1).expand(10, 1, 8, 8)
    path = save_grid(images, tmp_path / "sub" / "grid.png", nrow=4)
    assert path.exists() and sorted(p.name for p in path.parent.iterdir()) == ["grid.png"]
    with Image.open(path) as picture:
        assert picture.size == (4 * (8 + 2) + 2, 3 * (8 + 2) + 2) and picture.mode == "L"
        pixels = np.asarray(picture)
    assert pixels[2 + 4, 2 + 4] == 0  # first image is -1 -> black
    assert pixels[2 * 10 + 6, 1 * 10 + 6] == 255  # tenth image (row 2, col 1) is +1 -> white
    rgb = save_grid(torch.zeros(3, 3, 5, 5), tmp_path / "rgb.png", nrow=8)
    with Image.open(rgb) as picture:
        assert picture.size == (3 * 7 + 2, 1 * 7 + 2) and picture.mode == "RGB"


def test_class_grid_has_one_row_per_class(tmp_path):
    labels = grid_labels(3, 4)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    path = class_grid(torch.zeros(12, 1, 6, 6), per_class=4, path=tmp_path / "classes.png")
    with Image.open(path) as picture:
        assert picture.size == (4 * 8 + 2, 3 * 8 + 2)
    with pytest.raises(ValueError, match="per_class=5"):
        class_grid(torch.zeros(12, 1, 6, 6), per_class=5, path=tmp_path / "bad.png")
    with pytest.raises(ValueError, match="suffix"):
        save_grid(torch.zeros(1, 1, 6, 6), tmp_path / "grid.unknownformat")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampler_on_cuda(process):
    network = GaussianOracle(process, MU.unsqueeze(0).cuda(), S.cuda())
    network.alpha_bar = process.schedule.alpha_bar.cuda()
    noise = torch.randn(4000, 1, 2, 2, device="cuda")
    x = ddpm_sample(network, process, noise, timestep_sequence(T, 100),
                    generator=torch.Generator(device="cuda").manual_seed(0), x0_clip="none")
    assert x.device.type == "cuda" and torch.isfinite(x).all()
    np.testing.assert_allclose(x.double().mean(0).cpu().numpy(), MU[0].numpy(), atol=0.03)
