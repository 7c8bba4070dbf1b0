"""The cold-diffusion samplers (Bansal et al. 2022, Algorithms 1 and 2), their shared contract, and the start prior.

Bansal et al.'s argument for Algorithm 2 (sec. 3.3) is checked on the degradation it is made for,
``D(x, s) = x + s e``: Algorithm 2 returns ``x_0`` exactly with *any* restorer, Algorithm 1 only with a
perfect one. On the real blur both return ``x_0`` exactly with a perfect restorer.
"""

from __future__ import annotations

import inspect
from functools import partial

import pytest
import torch

from dreamdata.process import blur_betas
from dreamdata.process.blur import GaussianBlurDegradation
from dreamdata.process.gaussian import GaussianDiffusion
from dreamdata.process.rng import PerSampleGenerator
from dreamdata.process.schedules import cosine_betas
from dreamdata.sampling import (
    COLD_SAMPLERS,
    cold_improved_sample,
    cold_naive_sample,
    default_sampler,
    get_sampler,
    sampler_names,
    samplers_for,
    timestep_sequence,
)
from dreamdata.sampling.blur_prior import BlurPrior, fit_blur_prior, fit_gmm, start_sampler
from dreamdata.sampling.generate import generate

SAMPLERS = [pytest.param(cold_naive_sample, id="cold-naive"), pytest.param(cold_improved_sample, id="cold-improved")]
SHAPE = (1, 8, 8)


class LinearDegradation:
    """``D(x, s) = x + s e``: the degradation of Bansal et al.'s argument (a fixed direction ``e``)."""

    def __init__(self, num_steps: int, direction: torch.Tensor) -> None:
        self.num_steps = num_steps
        self.direction = direction

    def degrade(self, x: torch.Tensor, steps) -> torch.Tensor:
        return x + float(steps) * self.direction


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blur(num_steps: int = 10) -> GaussianBlurDegradation:
    return GaussianBlurDegradation(blur_betas("constant", num_steps, beta=1.0), kernel_size=5)


class Restorer:
    """A stand-in network: ``fn(x, t, labels)``, recording batch sizes and timesteps; class-aware, with a null
    class, so guidance can be exercised."""

    def __init__(self, fn, num_classes: int = 0) -> None:
        self.fn, self.num_classes, self.null_class = fn, num_classes, num_classes
        self.batch_sizes, self.timesteps = [], []

    def __call__(self, x, t, labels):
        self.batch_sizes.append(x.shape[0])
        self.timesteps.append(int(t[0]))
        return self.fn(x, t, labels)


# -- Bansal et al.'s argument ---------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [None, [9, 6, 2, 0], [4]])
def test_algorithm_2_inverts_a_linear_degradation_with_any_restorer(steps):
    x0 = torch.rand((4, *SHAPE), generator=seeded(0), dtype=torch.float64)
    direction = torch.randn(SHAPE, generator=seeded(1), dtype=torch.float64)
    process = LinearDegradation(10, direction)
    first = 9 if steps is None else steps[0]
    x_start = process.degrade(x0, first + 1)
    wrong = Restorer(lambda x, t, c: torch.randn(x.shape, generator=seeded(int(t[0])), dtype=x.dtype))
    improved = cold_improved_sample(wrong, process, x_start, steps, x0_clip="none")
    assert torch.allclose(improved, x0, atol=1e-12, rtol=0)  # Bansal et al. 2022, sec. 3.3
    naive = cold_naive_sample(wrong, process, x_start, steps, x0_clip="none")
    assert (naive - x0).abs().mean() > 0.5  # Algorithm 1 returns the (wrong) last x̂_0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_perfect_restorer_recovers_x0_through_the_blur(sampler):
    process = blur()
    x0 = torch.rand((3, *SHAPE), generator=seeded(2), dtype=torch.float64) * 2 - 1
    oracle = Restorer(lambda x, t, c: x0)
    for steps in (None, timestep_sequence(10, 3)):
        start = process.degrade(x0, 10 if steps is None else int(steps[0]) + 1)
        assert torch.allclose(sampler(oracle, process, start, steps, x0_clip="none"), x0, atol=1e-12, rtol=0)


def test_algorithm_2_is_more_tolerant_of_restorer_error_on_blur():
    """A restorer that is off by a fixed bias: Algorithm 2 cancels it in every step (``- D(x̂, s) + D(x̂, s-1)``
    of a constant is 0), Algorithm 1 keeps it."""
    process = blur()
    x0 = torch.rand((3, *SHAPE), generator=seeded(3), dtype=torch.float64) - 0.5
    biased = Restorer(lambda x, t, c: x0 + 0.2)
    start = process.degrade(x0, 10)
    improved = cold_improved_sample(biased, process, start, x0_clip="none")
    naive = cold_naive_sample(biased, process, start, x0_clip="none")
    assert (improved - x0).abs().max() < 1e-12  # the constant bias leaves D(x̂, s) - D(x̂, s-1) unchanged
    assert torch.allclose(naive, x0 + 0.2, atol=1e-12)


# -- the shared contract -----------------------------------------------------------------------------------


@pytest.mark.parametrize("guidance", [0.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cold_sampler_contract(sampler, dtype, guidance):
    process = blur()
    batch = 4
    network = Restorer(lambda x, t, c: torch.tanh(x * 3 + 0.1 * t.view(-1, 1, 1, 1) + 0.05 * c.view(-1, 1, 1, 1)),
                       num_classes=2)
    labels = torch.tensor([0, 1, 0, 1])
    start = torch.randn((batch, *SHAPE), generator=seeded(4)).to(dtype)
    timesteps = timestep_sequence(10, 6)
    generator = seeded(5)
    state = generator.get_state()

    def run(callback=None, x0_clip="static"):
        return sampler(network, process, start, timesteps, class_labels=labels, guidance_scale=guidance,
                       generator=generator, x0_clip=x0_clip, callback=callback)

    trajectory = []
    first, again = run(), run()
    recorded = run(callback=lambda i, t, x_t, x0_hat: trajectory.append((i, t, x_t, x0_hat)))
    assert (first.shape, first.dtype, first.device) == (start.shape, start.dtype, start.device)
    assert torch.equal(first, again) and torch.equal(first, recorded) and torch.isfinite(first).all()
    assert torch.equal(generator.get_state(), state)  # deterministic: draws nothing
    assert network.batch_sizes == [batch * (2 if guidance else 1)] * (3 * len(timesteps))
    assert network.timesteps[:len(timesteps)] == timesteps.tolist()
    assert [(i, t) for i, t, _, _ in trajectory] == list(enumerate(timesteps.tolist()))
    assert torch.equal(trajectory[0][2], start)
    assert all(x0_hat.abs().max() <= 1.0 for _, _, _, x0_hat in trajectory)  # static clipping
    last_x, last_x0 = trajectory[-1][2], trajectory[-1][3]
    if sampler is cold_naive_sample:
        assert torch.equal(first, last_x0.to(dtype))  # Algorithm 1 ends on x̂_0
    else:
        expected = last_x - process.degrade(last_x0, 1) + last_x0  # Algorithm 2's last step
        assert torch.allclose(first, expected.to(dtype), atol=1e-6)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_guidance_zero_is_the_conditional_restorer(sampler):
    process = blur()
    network = Restorer(lambda x, t, c: x * 0.5 + 0.1 * c.view(-1, 1, 1, 1), num_classes=2)
    start = torch.randn((2, *SHAPE), generator=seeded(6))
    labels = torch.tensor([0, 1])
    plain = sampler(network, process, start, class_labels=labels)
    guided = sampler(network, process, start, class_labels=labels, guidance_scale=0.0)
    assert torch.equal(plain, guided)
    # the guided output (1 + w) out(c) - w out(null) moves x̂_0 by -w * 0.1 * (null - c) per step
    moved = sampler(network, process, start, class_labels=labels, guidance_scale=1.0, x0_clip="none")
    assert not torch.allclose(moved, plain)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_guided_x0_is_the_classifier_free_combination(sampler):
    """At every step x̂_0 = (1 + w) out(x_t, t, c) - w out(x_t, t, null) (Ho & Salimans 2022, eq. 6),
    recomputed here from the recorded x_t with the restorer called directly."""
    process = blur()
    w = 1.5

    def fn(x, t, c):  # nonlinear in x, different per class and per step
        c = c.view(-1, 1, 1, 1)
        return torch.tanh(3 * x + 0.1 * t.view(-1, 1, 1, 1)) * (1 + 0.5 * c) - 0.2 * c

    network = Restorer(fn, num_classes=2)
    start = torch.randn((3, *SHAPE), generator=seeded(7), dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    null = torch.full_like(labels, network.null_class)
    trajectory = []
    sampler(network, process, start, timestep_sequence(10, 4), class_labels=labels, guidance_scale=w,
            x0_clip="none", callback=lambda i, t, x_t, x0_hat: trajectory.append((int(t), x_t, x0_hat)))
    assert [t for t, _, _ in trajectory] == timestep_sequence(10, 4).tolist()
    for t, x_t, x0_hat in trajectory:
        steps = torch.full((3,), t)
        expected = (1 + w) * fn(x_t, steps, labels) - w * fn(x_t, steps, null)
        torch.testing.assert_close(x0_hat, expected, rtol=0, atol=1e-12)
        assert not torch.allclose(x0_hat, fn(x_t, steps, labels))  # guidance did change it


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bad_arguments_are_reported(sampler):
    process = blur()
    start = torch.randn(2, *SHAPE)
    identity = Restorer(lambda x, t, c: x)
    run = partial(sampler, identity, process, start)
    with pytest.raises(ValueError, match="'clamp'"):
        run([5, 0], x0_clip="clamp")
    with pytest.raises(ValueError, match="descending"):
        run([0, 5])
    with pytest.raises(ValueError, match="10"):
        run([10, 0])
    with pytest.raises(ValueError, match=r"\(2, 1, 1, 1\)"):
        sampler(Restorer(lambda x, t, c: x[..., :1, :1]), process, start, [3, 0])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        run([5, 0], class_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="null_class"):
        sampler(lambda x, t, c: x, process, start, [5, 0], class_labels=torch.zeros(2, dtype=torch.long),
                guidance_scale=1.0)


def test_registry_families():
    gaussian = GaussianDiffusion(cosine_betas(10))
    assert sampler_names() == ["ddpm", "ddpm_beta", "ddim", "dpm++2m", "dpm++2m-sde", "dpm++3m", "dpm++3m-sde"]
    assert sampler_names(blur()) == ["cold-improved", "cold-naive"] == list(COLD_SAMPLERS)
    assert samplers_for(gaussian) is not COLD_SAMPLERS and default_sampler(gaussian) == "ddpm"
    assert default_sampler(blur()) == "cold-improved"
    assert get_sampler("cold-naive") is cold_naive_sample
    assert get_sampler("cold-improved", blur()) is cold_improved_sample
    with pytest.raises(ValueError, match="does not fit .* blur .* cold-improved, cold-naive"):
        get_sampler("ddim", blur())
    with pytest.raises(ValueError, match="does not fit .* Gaussian diffusion; use one of ddpm"):
        get_sampler("cold-naive", gaussian)
    with pytest.raises(ValueError, match="euler"):
        get_sampler("euler", blur())
    shared = ["network", "process", "start", "timesteps", "class_labels", "guidance_scale", "generator",
              "x0_clip", "progress", "callback", "null_class"]
    for name, sampler in COLD_SAMPLERS.items():  # and the shared keyword guidance_interval (refused for blur)
        assert list(inspect.signature(sampler).parameters) == [*shared, "guidance_interval"], name


# -- where generation starts ----------------------------------------------------------------------------


def test_gmm_recovers_two_clusters_deterministically():
    g = seeded(7)
    points = torch.cat([torch.randn(600, 1, generator=g) * 0.1 - 0.5, torch.randn(400, 1, generator=g) * 0.2 + 0.4])
    weights, means, covariances = fit_gmm(points, 2, seed=0)
    order = means[:, 0].argsort()
    assert torch.allclose(weights[order], torch.tensor([0.6, 0.4], dtype=torch.float64), atol=0.02)
    assert torch.allclose(means[order, 0], torch.tensor([-0.5, 0.4], dtype=torch.float64), atol=0.03)
    assert torch.allclose(covariances[order, 0, 0].sqrt(), torch.tensor([0.1, 0.2], dtype=torch.float64), atol=0.02)
    again = fit_gmm(points, 2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip((weights, means, covariances), again))
    with pytest.raises(ValueError, match="3 mixture components to 2 points"):
        fit_gmm(points[:2], 3, seed=0)


def test_blur_prior_fits_channel_means_and_round_trips(tmp_path):
    process = blur(num_steps=30)
    images = torch.randint(0, 256, (50, 3, 8, 8), generator=seeded(8), dtype=torch.uint8)
    prior = fit_blur_prior(process, images, components=1, seed=0)
    blurred_means = process.degrade(images.double() / 127.5 - 1, 30).mean(dim=(2, 3))
    assert torch.allclose(torch.tensor(prior.means[0], dtype=torch.float64), blurred_means.mean(0), atol=1e-12)
    assert prior.num_images == 50 and len(prior.covariances[0]) == 3
    assert BlurPrior.load(prior.save(tmp_path / "prior.json")) == prior


def test_start_states_are_flat_plus_noise_and_per_sample():
    prior = BlurPrior(weights=[0.5, 0.5], means=[[-0.6], [0.4]], covariances=[[[1e-4]], [[1e-4]]], num_images=2,
                      seed=0)
    flat = start_sampler(prior, 0.0)(PerSampleGenerator(0, range(200)), SHAPE, "cpu")
    assert torch.equal(flat, flat[:, :, :1, :1].expand_as(flat))  # flat images
    values = flat[:, 0, 0, 0]
    near = ((values + 0.6).abs() < 0.05) | ((values - 0.4).abs() < 0.05)
    assert near.all() and 60 < int((values < 0).sum()) < 140  # both components, about half each
    noisy = start_sampler(prior, 0.1)(PerSampleGenerator(0, range(200)), SHAPE, "cpu")
    assert 0.09 < float((noisy - noisy.mean(dim=(2, 3), keepdim=True)).std()) < 0.11
    alone = start_sampler(prior, 0.1)(PerSampleGenerator(0, [7]), SHAPE, "cpu")
    assert torch.equal(alone[0], noisy[7])  # sample 7's start depends only on (seed, 7)
    with pytest.raises(ValueError, match="-1"):
        start_sampler(prior, -1.0)


def test_generate_with_a_blur_process_is_batch_independent():
    process = blur()
    network = Restorer(lambda x, t, c: torch.tanh(2 * x))
    network.in_channels, network.image_size = 1, 8
    prior = BlurPrior(weights=[1.0], means=[[0.1]], covariances=[[[0.01]]], num_images=1, seed=0)
    start = start_sampler(prior, 0.05)
    run = partial(generate, network, process, None, 5, 3, sampler="cold-improved", steps=10, progress=False,
                  start=start)
    assert torch.allclose(run(batch_size=5), run(batch_size=2), atol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        generate(network, process, None, 2, 0, sampler="ddpm", progress=False)
