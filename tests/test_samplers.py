"""Tests of the sampler family (DDPM, DDIM, DPM-Solver++(2M) and (3M)), their shared contract and helpers.

Most checks use the exact denoiser of Gaussian data, ``GaussianOracle`` from ``test_sampling``: for data
``x0 ~ N(mu, diag(s^2))`` the optimal network output is known in closed form, so a sampler's output
distribution can be compared with the data distribution, and with the exact probability-flow ODE map.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest
import torch

from dreamdata.process import GaussianDiffusion, cosine_betas, linear_betas
from dreamdata.process.rng import PerSampleGenerator, per_sample_noise, per_sample_seed, randint, randn_like
from dreamdata.sampling import (
    SAMPLERS,
    SPACINGS,
    clip_x0,
    ddim_sample,
    ddpm_sample,
    dpm_solver_pp_2m_sample,
    dynamic_threshold,
    get_sampler,
    grid_labels,
    sampler_names,
    timestep_sequence,
)
from dreamdata.sampling.timesteps import check_timesteps
from test_sampling import MU, S, T, GaussianOracle

SHAPE = (1, 2, 2)  # one sample: 4 independent pixels, each with its own MU, S
MUS = torch.stack([MU, -MU, torch.zeros_like(MU)])  # class 0, class 1, null class 2
NULL = 2

# Every registered sampler, plus sampler-specific settings that take other code paths.
VARIANTS = [pytest.param(get_sampler(name), {}, id=name) for name in sampler_names()] + [
    pytest.param(ddim_sample, {"eta": 1.0}, id="ddim-eta1"),
    pytest.param(ddim_sample, {"eta": 0.5}, id="ddim-eta0.5"),
    pytest.param(dpm_solver_pp_2m_sample, {"lower_order_final": False}, id="dpm++2m-no-lower-order-final"),
]

_PROCESSES: dict[str, GaussianDiffusion] = {}


def make_process(kind: str, prediction: str = "epsilon") -> GaussianDiffusion:
    """``linear`` / ``cosine``: T = 1000; ``tiny``: a 16-step cosine schedule (cached)."""
    key = f"{kind}-{prediction}"
    if key not in _PROCESSES:
        betas = {"linear": lambda: linear_betas(T), "cosine": lambda: cosine_betas(T),
                 "tiny": lambda: cosine_betas(16)}[kind]()
        _PROCESSES[key] = GaussianDiffusion(betas, prediction=prediction)
    return _PROCESSES[key]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def standardised_noise(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Normal noise ``[n, *SHAPE]`` rescaled so each pixel's sample mean is exactly 0 and variance exactly 1.

    With the Gaussian oracle a deterministic sampler maps each pixel's starting noise through an affine
    function; with standardised noise the output's sample mean and variance are then exactly the mean and
    variance of the sampler's output distribution - no sampling error, whatever ``n`` is.
    """
    z = torch.randn((n, *SHAPE), generator=seeded(seed), dtype=torch.float64)
    return ((z - z.mean(0)) / z.std(0)).to(dtype)


# -- the contract every sampler keeps ---------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    id: str
    process: str  # make_process kind
    steps: int
    spacing: str
    x0_clip: str
    labels: str  # "none" (unconditional network), "conditional" (no null class), "guided"
    guidance: float
    prediction: str
    dtype: torch.dtype
    progress: bool = False


SETTINGS = [
    Setting("1-step", "linear", 1, "linspace", "static", "none", 0.0, "epsilon", torch.float32),
    Setting("2-steps-v", "linear", 2, "trailing", "none", "conditional", 0.0, "v", torch.float32),
    Setting("5-steps-guided-dynamic", "linear", 5, "leading", "dynamic", "guided", 3.0, "epsilon", torch.float32),
    Setting("10-steps-x0-quadratic", "cosine", 10, "quadratic", "static", "guided", 1.0, "x0", torch.float64),
    Setting("50-steps-guided", "linear", 50, "linspace", "none", "guided", 1.5, "epsilon", torch.float32, True),
    Setting("20-steps-bfloat16", "cosine", 20, "trailing", "static", "conditional", 0.0, "epsilon", torch.bfloat16),
    Setting("full-T-tiny-schedule", "tiny", 16, "linspace", "none", "none", 0.0, "v", torch.float64),
    Setting("8-steps-edm-guided", "cosine", 8, "trailing", "static", "guided", 2.0, "edm", torch.float32),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.id)
@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_sampler_contract(sampler, options, setting):
    process = make_process(setting.process, setting.prediction)
    batch = 8
    if setting.labels == "none":
        network, labels = GaussianOracle(process, MU.unsqueeze(0), S, prediction=setting.prediction), None
    else:
        network = GaussianOracle(process, MUS, S, prediction=setting.prediction,
                                 null_class=NULL if setting.labels == "guided" else None)
        labels = torch.tensor([0, 1] * (batch // 2))
    noise = torch.randn((batch, *SHAPE), generator=seeded(0)).to(setting.dtype)
    timesteps = timestep_sequence(process.num_steps, setting.steps, setting.spacing)

    def run(seed=1, callback=None):
        return sampler(network, process, noise, timesteps, class_labels=labels, guidance_scale=setting.guidance,
                       generator=seeded(seed), x0_clip=setting.x0_clip, progress=setting.progress, callback=callback,
                       **options)

    trajectory = []
    first = run()
    again = run()
    recorded = run(callback=lambda i, t, x_t, x0_hat: trajectory.append((i, t, x_t, x0_hat)))

    assert (first.shape, first.dtype, first.device) == (noise.shape, noise.dtype, noise.device)
    assert torch.equal(first, again)  # deterministic given the generator's seed
    assert torch.equal(first, recorded)  # the callback does not change the result
    assert torch.isfinite(first).all()
    if setting.x0_clip != "none":
        assert first.abs().max() <= 1.0  # the last step lands on the clipped x0_hat

    # one network call per step, with the guided batch doubled
    calls = len(timesteps)
    assert network.batch_sizes == [batch * (2 if setting.guidance else 1)] * (3 * calls)
    # the callback: once per step, in order, with the state before the step and x0_hat, no blow-up anywhere
    assert [(i, t) for i, t, _, _ in trajectory] == list(enumerate(timesteps.tolist()))
    assert torch.equal(trajectory[0][2], noise.to(trajectory[0][2].dtype))
    for _, _, x_t, x0_hat in trajectory:
        assert x_t.shape == x0_hat.shape == noise.shape
        assert torch.isfinite(x_t).all() and torch.isfinite(x0_hat).all()
        assert x_t.abs().max() < 10 and x0_hat.abs().max() < 10
    assert torch.equal(first, trajectory[-1][3].to(first.dtype))  # the result is the last x0_hat


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_untrained_networks_give_finite_samples_at_any_step_count(sampler, options):
    # The cosine schedule's last alpha_bar is ~1e-9, so x0_hat = x / sqrt(alpha_bar) ~ 1e4 at the first step.
    process = make_process("cosine")
    networks = [lambda x, t, c: torch.zeros_like(x), lambda x, t, c: torch.full_like(x, 3.0),
                lambda x, t, c: torch.randn(x.shape, generator=seeded(int(t[0])), dtype=x.dtype) * 2]
    noise = torch.randn(4, *SHAPE, generator=seeded(3))
    for network in networks:
        for steps in (1, 2, 5, 10, 50):
            for x0_clip in ("none", "static", "dynamic"):
                x = sampler(network, process, noise, timestep_sequence(T, steps), generator=seeded(4),
                            x0_clip=x0_clip, **options)
                assert torch.isfinite(x).all(), (steps, x0_clip)
                if x0_clip != "none":
                    assert x.abs().max() <= 1.0


def test_registry_and_shared_signature():
    assert sampler_names() == ["ddpm", "ddpm_beta", "ddim", "dpm++2m", "dpm++2m-sde", "dpm++3m", "dpm++3m-sde"]
    assert get_sampler("ddim") is ddim_sample and get_sampler("dpm++2m") is dpm_solver_pp_2m_sample
    assert get_sampler("dpm++2m-sde").keywords == {"eta": 1.0}
    assert get_sampler("dpm++3m-sde").keywords == {"eta": 1.0, "order": 3}
    with pytest.raises(ValueError, match="ddpm, ddpm_beta, ddim, dpm\\+\\+2m, dpm\\+\\+2m-sde, dpm\\+\\+3m"):
        get_sampler("euler")
    shared = ["network", "process", "noise", "timesteps", "class_labels", "guidance_scale", "generator",
              "x0_clip", "progress", "callback", "null_class"]
    for name, sampler in SAMPLERS.items():
        parameters = list(inspect.signature(sampler).parameters.values())
        assert [p.name for p in parameters[:len(shared)]] == shared, name
        assert all(p.kind == p.KEYWORD_ONLY for p in parameters[len(shared):]), name  # sampler-specific
        assert inspect.signature(sampler).parameters["x0_clip"].default == "static"


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_bad_arguments_are_reported(sampler, options):
    process = make_process("linear")
    noise = torch.randn(2, *SHAPE)
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    run = partial(sampler, process=process, noise=noise, **options)
    with pytest.raises(ValueError, match="'clamp'"):
        run(zero, timesteps=[5, 0], x0_clip="clamp")
    with pytest.raises(ValueError, match="descending"):
        run(zero, timesteps=[0, 10])
    with pytest.raises(ValueError, match="1000"):
        run(zero, timesteps=[1000, 0])
    with pytest.raises(ValueError, match=r"\(2, 1, 1, 1\)"):
        run(lambda x, t, c: x[..., :1, :1], timesteps=[3, 0])
    with pytest.raises(ValueError, match="null_class=None"):
        run(zero, timesteps=[5, 0], class_labels=torch.zeros(2, dtype=torch.long), guidance_scale=1.0)
    with pytest.raises(ValueError, match="class_labels=None"):
        run(zero, timesteps=[5, 0], guidance_scale=1.0, null_class=0)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        run(zero, timesteps=[5, 0], class_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="meta"):  # a CPU generator cannot draw the noise of a meta tensor
        run(zero, noise=torch.empty(2, *SHAPE, device="meta"), timesteps=[5, 0], generator=seeded(0))


def test_sampler_specific_arguments_are_checked():
    process = make_process("linear")
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    for eta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            ddim_sample(zero, process, torch.randn(2, *SHAPE), [5, 0], eta=eta)
    for eta in (-0.1, float("inf"), float("nan")):  # DPM-Solver++ takes any finite eta >= 0
        with pytest.raises(ValueError, match="eta"):
            dpm_solver_pp_2m_sample(zero, process, torch.randn(2, *SHAPE), [5, 0], eta=eta)
    with pytest.raises(ValueError, match="'fixed'"):
        ddpm_sample(zero, process, torch.randn(2, *SHAPE), [5, 0], variance="fixed")


# -- classifier-free guidance -------------------------------------------------------------------------


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_guidance_zero_is_the_conditional_sampler(sampler, options):
    process = make_process("linear")
    labels = torch.tensor([0, 1, 1, 0])
    noise = torch.randn(4, *SHAPE, generator=seeded(13))
    with_null = GaussianOracle(process, MUS, S, null_class=NULL)
    conditional_only = GaussianOracle(process, MUS, S)
    taus = timestep_sequence(T, 20)
    a = sampler(with_null, process, noise, taus, class_labels=labels, guidance_scale=0.0, generator=seeded(14),
                **options)
    b = sampler(conditional_only, process, noise, taus, class_labels=labels, generator=seeded(14), **options)
    assert torch.equal(a, b)
    assert with_null.batch_sizes == [4] * 20  # no doubled batch at w = 0


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_guidance_moves_the_mean_as_predicted(sampler, options):
    # Guided eps is the oracle of N((1 + w) mu_c - w mu_null, s^2) (Ho & Salimans 2022, eq. 6 is affine in
    # mu), and every sampler keeps the mean of Gaussian data exactly, up to the start x_T ~ N(0, I)
    # instead of N(sqrt(ab_T) mu, .): at most sqrt(ab_T) |mu| = 0.0063 * 1.0, shrunk by the flow.
    process = make_process("linear")
    w, n = 1.5, 1500
    network = GaussianOracle(process, MUS, S, null_class=NULL)
    labels = grid_labels(2, n)
    noise = torch.randn((2 * n, *SHAPE), generator=seeded(12))
    x = sampler(network, process, noise, timestep_sequence(T, 20), class_labels=labels, guidance_scale=w,
                generator=seeded(15), x0_clip="none", **options)
    assert network.batch_sizes == [4 * n] * 20  # conditional and unconditional halves in one pass
    for c in (0, 1):
        group = x[labels == c].double()
        expected = ((1 + w) * MUS[c] - w * MUS[NULL])[0].double()
        tolerance = 4 * (group.var(0) / n).sqrt() + 0.004
        assert ((group.mean(0) - expected).abs() <= tolerance).all(), (group.mean(0), expected)


# -- accuracy against Gaussian data -----------------------------------------------------------------

IMAGE_MU = MU
IMAGE_S = torch.tensor([0.4, 0.5, 0.6, 0.7]).view(1, 1, 2, 2)  # per-pixel std of images in [-1, 1]


def logsnr_timesteps(alpha_bar: torch.Tensor, count: int) -> torch.Tensor:
    """The library's even-in-lambda grid (Lu et al. 2022)."""
    return timestep_sequence(alpha_bar.numel(), count, spacing="logsnr", alpha_bar=alpha_bar)


ODE_CASES = [
    # schedule, grid, sampler, steps, variance tolerance (|var / s^2 - 1|, measured worst pixel in brackets)
    ("cosine", "linspace", ddim_sample, 50, 0.09),  # [-0.070]
    ("cosine", "linspace", dpm_solver_pp_2m_sample, 20, 0.03),  # [-0.021]
    ("cosine", "linspace", dpm_solver_pp_2m_sample, 10, 0.22),  # [-0.179]
    ("linear", "logsnr", ddim_sample, 50, 0.12),  # [-0.095] (measured with 49 distinct indices)
    ("linear", "logsnr", dpm_solver_pp_2m_sample, 20, 0.04),  # [+0.029]
    ("linear", "logsnr", dpm_solver_pp_2m_sample, 10, 0.06),  # [+0.045]
]


@pytest.mark.parametrize("schedule, grid, sampler, steps, var_tolerance", ODE_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2].__name__}-{c[3]}" for c in ODE_CASES])
def test_ode_samplers_reproduce_gaussian_data(schedule, grid, sampler, steps, var_tolerance):
    """DDIM (eta = 0) at 50 steps and DPM-Solver++(2M) at 20 and 10 steps, exact denoiser, data with
    image-like per-pixel std 0.4-0.7.

    With standardised noise the measured moments are the sampler's exact output moments, so the
    tolerances are discretisation error only: the mean is exact up to the start offset
    ``sqrt(ab_T) |mu|``; the variance error is the solver's. On the linear schedule the evenly-in-t grids
    leave the decisive low-noise end (``lambda`` from 1.7 to 4.6 between indices 52 and 0 at 20 steps) to
    a single step, so there the samplers are tested on an even-in-``lambda`` grid; with "linspace" the
    measured worst errors are -13% (DDIM, 50), -15% (DPM-Solver++, 20) and -48% (DPM-Solver++, 10).
    """
    process = make_process(schedule)
    n = 4000
    network = GaussianOracle(process, IMAGE_MU.unsqueeze(0), IMAGE_S)
    noise = standardised_noise(n, seed=20)
    taus = (timestep_sequence(T, steps) if grid == "linspace"
            else logsnr_timesteps(process.schedule.alpha_bar, steps))
    x = sampler(network, process, noise, taus, x0_clip="none").double()
    mu, s2 = IMAGE_MU[0].double(), IMAGE_S[0].double() ** 2
    start_offset = math.sqrt(process.schedule.alpha_bar[-1]) * mu.abs().max().item()
    assert (x.mean(0) - mu).abs().max() <= start_offset + 2e-4
    assert (x.var(0) / s2 - 1).abs().max() <= var_tolerance
    if sampler is ddim_sample:
        # each DDIM step with the Gaussian oracle contracts by (a a' s^2 + b b') / (a^2 s^2 + b^2) <=
        # the exact sqrt((a'^2 s^2 + b'^2) / (a^2 s^2 + b^2)) (Cauchy-Schwarz): it always under-disperses
        assert (x.var(0) < s2).all()


class MixtureOracle:
    """The exact epsilon-model of per-pixel data ``x0 ~ sum_k w_k N(m_k, v)`` - a nonlinear denoiser.

    ``x_t`` given component ``k`` is ``N(a m_k, a^2 v + sigma^2)`` (``a = sqrt(ab)``, ``sigma^2 = 1 - ab``),
    so ``E[x0 | x_t] = sum_k p(k | x_t) (m_k + v a (x_t - a m_k) / (a^2 v + sigma^2))`` with posterior
    component weights ``p(k | x_t)``, and ``eps = (x_t - a E[x0 | x_t]) / sigma``.
    """

    def __init__(self, process, means, weights, std):
        self.alpha_bar = process.schedule.alpha_bar
        self.means = torch.tensor(means, dtype=torch.float64)
        self.log_weights = torch.tensor(weights, dtype=torch.float64).log()
        self.var = std ** 2

    def __call__(self, x, t, class_labels):
        ab = self.alpha_bar[t].view(-1, *[1] * (x.ndim - 1))
        a, s2 = ab.sqrt().unsqueeze(-1), (1 - ab).unsqueeze(-1)
        xk = x.double().unsqueeze(-1)
        total = a ** 2 * self.var + s2
        posterior = torch.softmax(self.log_weights - (xk - a * self.means) ** 2 / (2 * total), dim=-1)
        x0 = (posterior * (self.means + self.var * a * (xk - a * self.means) / total)).sum(-1)
        return ((x.double() - ab.sqrt() * x0) / (1 - ab).sqrt()).to(x.dtype)


MIXTURE_CASES = [
    # schedule, sampler, steps, variance tolerance (measured in brackets)
    ("linear", ddim_sample, 50, 0.08),  # [-0.063]
    ("linear", dpm_solver_pp_2m_sample, 20, 0.06),  # [-0.047]
    ("cosine", dpm_solver_pp_2m_sample, 20, 0.01),  # [-0.004]
    ("cosine", dpm_solver_pp_2m_sample, 10, 0.08),  # [-0.064]
]


@pytest.mark.parametrize("schedule, sampler, steps, var_tolerance", MIXTURE_CASES,
                         ids=[f"{c[0]}-{c[1].__name__}-{c[2]}" for c in MIXTURE_CASES])
def test_ode_samplers_reproduce_a_gaussian_mixture(schedule, sampler, steps, var_tolerance):
    """Bimodal pixels (30% near -0.6, 70% near 0.5, std 0.15 each, like near-binary images), default
    "linspace" grid: mean, variance and the weight of each mode.

    The noise is the 4000-point quantile grid of N(0, 1). A deterministic sampler maps each starting
    value through a fixed increasing function (an ODE flow keeps the order of its solutions - checked
    below), so the sample moments are a quadrature of the output distribution's moments, accurate to
    about 1e-3 in the variance (n = 1000 and n = 16000 agree that far), not a noisy estimate.
    """
    process = make_process(schedule)
    means, weights, std = (-0.6, 0.5), (0.3, 0.7), 0.15
    mean = sum(w * m for w, m in zip(weights, means))
    var = std ** 2 + sum(w * m * m for w, m in zip(weights, means)) - mean ** 2
    n = 4000
    z = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).view(n, 1, 1, 1)
    x = sampler(MixtureOracle(process, means, weights, std), process, z, timestep_sequence(T, steps),
                x0_clip="none").flatten()
    assert (x.diff() > 0).all()  # order preserved, as by the exact flow
    assert abs(x.mean().item() - mean) < 0.005
    assert abs(x.var().item() / var - 1) < var_tolerance
    assert abs((x > -0.05).double().mean().item() - weights[1]) < 0.01  # mass of the upper mode


def flow_errors(sampler, schedule: str, steps=(16, 32, 64)) -> list[float]:
    """Max error against the exact probability-flow map on even-in-lambda grids of ``steps`` steps.

    For Gaussian data the exact ODE maps ``x_T ~ N(sqrt(ab_T) mu, ab_T s^2 + 1 - ab_T)`` monotonically
    and affinely onto ``N(mu, s^2)``, so each starting point has a known end point.
    """
    process = make_process(schedule)
    s = torch.tensor([0.3, 0.5, 0.7, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    mu = torch.full_like(s, 0.3)
    network = GaussianOracle(process, mu.unsqueeze(0), s)
    z = torch.linspace(-3, 3, 13, dtype=torch.float64).view(13, 1, 1, 1).expand(13, *SHAPE)
    ab_T = float(process.schedule.alpha_bar[-1])
    exact = mu + s * (z - math.sqrt(ab_T) * mu) / (ab_T * s ** 2 + 1 - ab_T).sqrt()
    return [(sampler(network, process, z, logsnr_timesteps(process.schedule.alpha_bar, count), x0_clip="none")
             - exact).abs().max().item() for count in steps]


def test_ode_solvers_converge_at_their_order():
    """Error against the exact probability-flow map (:func:`flow_errors`), on even-in-lambda grids of 16, 32
    and 64 steps: DDIM is first order (error halves per doubling), DPM-Solver++(2M) second order (quarters)."""
    ddim, dpm = flow_errors(ddim_sample, "linear"), flow_errors(dpm_solver_pp_2m_sample, "linear")
    for coarse, fine in zip(ddim, ddim[1:]):
        assert 1.7 < coarse / fine < 2.4, ddim
    for coarse, fine in zip(dpm, dpm[1:]):
        assert coarse / fine > 3.2, dpm
    assert all(d < e / 6 for d, e in zip(dpm, ddim)), (dpm, ddim)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_third_order_solver_converges_at_third_order(schedule):
    """DPM-Solver++(3M) against the exact probability-flow map (as above), on even-in-lambda grids of 16, 32
    and 64 steps: each doubling divides its error by more than 5 (third order would give 8; the first two
    steps are first and second order; measured 5.2-7.3), where 2M's divides by 2.2-4.2, and at 32 and 64 steps
    its error is below 2M's."""
    third, second = flow_errors(get_sampler("dpm++3m"), schedule), flow_errors(get_sampler("dpm++2m"), schedule)
    for coarse, fine in zip(third, third[1:]):
        assert coarse / fine > 5.0, third
    assert third[1] < second[1] and third[2] < second[2], (third, second)


def test_third_order_solver_without_a_third_order_step_is_the_second_order_one():
    # Third order needs two earlier predictions, and with fewer than 15 timesteps the last two steps are
    # lowered (first, then at most second order): with 5 timesteps no step is third order, so 3M is 2M,
    # ODE and SDE (the same draws); with 6 the third step is third order and the samples differ.
    process = make_process("cosine")
    network = GaussianOracle(process, MU.unsqueeze(0), S)
    noise = torch.randn(16, *SHAPE, generator=seeded(36), dtype=torch.float64)
    for eta in (0.0, 1.0):
        def run(order, steps):
            return dpm_solver_pp_2m_sample(network, process, noise, timestep_sequence(T, steps), x0_clip="none",
                                           generator=seeded(37), eta=eta, order=order)
        torch.testing.assert_close(run(3, 5), run(2, 5), rtol=0, atol=0)
        assert (run(3, 6) - run(2, 6)).abs().max() > 1e-4  # measured 8e-4 (ODE)
    with pytest.raises(ValueError, match="order: expected 2 or 3, got 4"):
        dpm_solver_pp_2m_sample(network, process, noise, timestep_sequence(T, 5), order=4)


def test_ddim_eta_one_is_ddpm_with_beta_tilde():
    # Song et al. 2021, eq. 16: sigma_t(1) is the DDPM posterior std, and eq. 12's mean is then the
    # posterior mean (Ho et al. eq. 7) - same draws from the same generator, same samples.
    # With clipping this needs DDIM's eps_hat re-derived from the clipped x0_hat, which the data with means
    # 3 * MU (up to 1.2, outside [-1, 1]) make sure of.
    process = make_process("cosine")
    noise = torch.randn(64, *SHAPE, generator=seeded(30), dtype=torch.float64)
    cases = [(MU, "none", timestep_sequence(T, T)), (MU, "none", timestep_sequence(T, 20, "trailing")),
             (3 * MU, "static", timestep_sequence(T, 20, "trailing")), (3 * MU, "dynamic", timestep_sequence(T, 50))]
    for mu, x0_clip, taus in cases:
        network = GaussianOracle(process, mu.unsqueeze(0), S)
        ddim = ddim_sample(network, process, noise, taus, generator=seeded(31), x0_clip=x0_clip, eta=1.0)
        ddpm = ddpm_sample(network, process, noise, taus, generator=seeded(31), x0_clip=x0_clip)
        torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)
        if x0_clip != "none":  # the clipping did bite
            unclipped = ddpm_sample(network, process, noise, taus, generator=seeded(31), x0_clip="none")
            assert (ddpm - unclipped).abs().max() > 0.1


def test_first_order_steps_of_dpm_solver_are_ddim():
    # DPM-Solver++(1) is DDIM (Lu et al. 2022): with 1 or 2 timesteps every step is first order,
    # and below 15 steps lower_order_final changes only the step into the last timestep.
    process = make_process("linear")
    network = GaussianOracle(process, MU.unsqueeze(0), S)
    noise = torch.randn(32, *SHAPE, generator=seeded(32), dtype=torch.float64)
    for steps in (1, 2):
        taus = timestep_sequence(T, steps)
        torch.testing.assert_close(dpm_solver_pp_2m_sample(network, process, noise, taus),
                                   ddim_sample(network, process, noise, taus), rtol=1e-12, atol=1e-12)
    for steps, differs in ((10, True), (20, False)):
        taus = timestep_sequence(T, steps, "trailing")
        a = dpm_solver_pp_2m_sample(network, process, noise, taus, x0_clip="none")
        b = dpm_solver_pp_2m_sample(network, process, noise, taus, x0_clip="none", lower_order_final=False)
        assert (not torch.equal(a, b)) == differs


def test_deterministic_samplers_draw_no_noise():
    process = make_process("linear")
    network = GaussianOracle(process, MU.unsqueeze(0), S)
    for sampler in (ddim_sample, dpm_solver_pp_2m_sample):
        generator = seeded(33)
        state = generator.get_state()
        sampler(network, process, torch.randn(4, *SHAPE), timestep_sequence(T, 10), generator=generator)
        assert torch.equal(generator.get_state(), state)


# -- per-sample seeding -------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_per_sample_seeding_is_independent_of_the_batch(sampler, options):
    process = make_process("linear")
    network = GaussianOracle(process, MUS, S, null_class=NULL)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    taus = timestep_sequence(T, 10)

    def draw(indices, seed=7):
        indices = list(indices)
        return sampler(network, process, per_sample_noise(seed, indices, SHAPE), taus,
                       class_labels=labels[indices], guidance_scale=1.0,
                       generator=PerSampleGenerator(seed, indices), **options)

    whole = draw(range(6))
    split = torch.cat([draw([0, 1]), draw([2, 3, 4, 5])])
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(draw([4, 1]), whole[[4, 1]], rtol=0, atol=1e-6)  # any order, any subset
    assert not torch.allclose(draw(range(6), seed=8), whole)


def test_one_generator_for_the_batch_is_not_batch_independent():
    # the counterpart of the test above: what per-sample seeding fixes
    process = make_process("linear")
    network = GaussianOracle(process, MU.unsqueeze(0), S)
    noise = torch.randn(6, *SHAPE, generator=seeded(1))
    taus = timestep_sequence(T, 10)
    whole = ddpm_sample(network, process, noise, taus, generator=seeded(2))
    split = torch.cat([ddpm_sample(network, process, noise[:2], taus, generator=seeded(2)),
                       ddpm_sample(network, process, noise[2:], taus, generator=seeded(2))])
    assert not torch.allclose(whole, split)


def test_per_sample_generator_draws():
    a = PerSampleGenerator(3, [5, 9]).randn(4)
    b = PerSampleGenerator(3, torch.tensor([9, 1, 5])).randn(4)
    assert a.shape == (2, 4) and b.shape == (3, 4)
    assert torch.equal(a[0], b[2]) and torch.equal(a[1], b[0])  # (seed, index) fixes the row
    assert not torch.equal(b[0], b[1]) and not torch.equal(a, PerSampleGenerator(4, [5, 9]).randn(4))
    # successive draws continue each sample's own stream
    generator = PerSampleGenerator(3, [5, 9])
    first, second = generator.randn(4), generator.randn(4)
    assert torch.equal(first, a) and not torch.equal(second, a)
    # the start noise comes from a different stream than a sampler's per-step noise
    start = per_sample_noise(3, [5, 9], (4,))
    assert start.shape == (2, 4) and not torch.equal(start, a)
    assert torch.equal(start[1:], per_sample_noise(3, [9], (4,)))
    # randn_like dispatches on the generator type, keeps dtype, checks the batch size
    like = randn_like(torch.zeros(2, 3, 2, dtype=torch.float64), PerSampleGenerator(3, [5, 9]))
    assert like.shape == (2, 3, 2) and like.dtype == torch.float64
    # the definition: row k is torch.randn from a generator seeded with per_sample_seed(seed, indices[k])
    own = torch.Generator().manual_seed(per_sample_seed(3, 9))
    assert torch.equal(like[1], torch.randn((3, 2), generator=own, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 samples"):
        randn_like(torch.zeros(3, 4), PerSampleGenerator(3, [5, 9]))
    with pytest.raises(ValueError, match="meta"):
        randn_like(torch.zeros(2, 4, device="meta"), PerSampleGenerator(3, [5, 9]))
    with pytest.raises(ValueError, match="PerSampleGenerator"):
        randint(10, 2, "cpu", PerSampleGenerator(3, [5, 9]))
    with pytest.raises(ValueError, match=">= 0"):
        per_sample_seed(3, -1)
    assert 0 <= per_sample_seed(-5, 2**40) < 2**64  # any integer seed gives a valid torch seed
    # neighbouring samples get unrelated 64-bit seeds
    assert len({per_sample_seed(0, i) for i in range(1000)} | {per_sample_seed(0, i, 1) for i in range(1000)}) == 2000


# -- x0 clipping --------------------------------------------------------------------------------------


def test_dynamic_thresholding_by_hand():
    # Sample 0: |x| = 0, 0.01, ..., 2.00 (201 values). numpy's linear-interpolation quantile at 0.995 sits
    # at position 0.995 * 200 = 199 exactly: s = 1.99. Values are clamped to [-1.99, 1.99] and divided by s.
    magnitudes = torch.arange(201, dtype=torch.float64) / 100
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(101)[:201]
    x = (magnitudes * signs).view(1, 1, 1, 201)
    out = dynamic_threshold(x)
    s = 1.99
    assert out[0, 0, 0, 200].item() == pytest.approx(1.0)  # 2.00 clamped to s, then / s
    assert out[0, 0, 0, 199].item() == pytest.approx(-1.0)  # -1.99
    assert out[0, 0, 0, 150].item() == pytest.approx(1.5 / s)
    assert out[0, 0, 0, 3].item() == pytest.approx(-0.03 / s)
    # Sample 1: 11 values 0, 0.5, ..., 5: position 9.95 interpolates 4.5 and 5.0: s = 4.975.
    # Sample 2: inside [-1, 1], so s = max(1, 0.9...) = 1 and nothing changes. Per sample, in one batch.
    y = torch.stack([torch.arange(11) * 0.5, torch.linspace(-0.9, 0.9, 11)]).view(2, 1, 1, 11)
    out = dynamic_threshold(y)
    torch.testing.assert_close(out[0].flatten(), (torch.arange(11) * 0.5).clamp(max=4.975) / 4.975)
    assert torch.equal(out[1], y[1])
    assert out.dtype == y.dtype and dynamic_threshold(y.bfloat16()).dtype == torch.bfloat16
    # agrees with torch.quantile on random data
    z = torch.randn(5, 3, 8, 8, generator=seeded(40)) * 3
    s = torch.quantile(z.abs().flatten(1), 0.995, dim=1).clamp(min=1).view(5, 1, 1, 1)
    torch.testing.assert_close(dynamic_threshold(z), torch.maximum(torch.minimum(z, s), -s) / s)


def test_clip_modes():
    x = torch.tensor([-3.0, -1.0, 0.5, 2.0]).view(1, 1, 1, 4)
    assert clip_x0(x, "none") is x
    assert clip_x0(x, "static").flatten().tolist() == [-1.0, -1.0, 0.5, 1.0]
    torch.testing.assert_close(clip_x0(x, "dynamic"), dynamic_threshold(x))
    with pytest.raises(ValueError, match="none, static, dynamic"):
        clip_x0(x, "soft")


# -- timestep spacings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("train, sample", [(1000, 1000), (1000, 999), (1000, 100), (1000, 50), (1000, 7),
                                           (1000, 2), (1000, 1), (10, 3), (5, 4), (2, 2), (1, 1)])
def test_every_spacing_gives_distinct_descending_valid_indices(spacing, train, sample):
    alpha_bar = torch.linspace(0.999, 0.001, train, dtype=torch.float64) if train > 1 else torch.tensor([0.5])
    steps = timestep_sequence(train, sample, spacing, alpha_bar=alpha_bar)
    assert steps.dtype == torch.long and steps.shape == (sample,)
    assert (steps[1:] < steps[:-1]).all()  # strictly descending, hence distinct
    assert 0 <= steps.min() and steps.max() <= train - 1
    assert torch.equal(check_timesteps(steps, train), steps)
    if sample == train:
        assert steps.tolist() == list(range(train - 1, -1, -1))


@pytest.mark.parametrize("train, sample", [(1000, 10), (1000, 50), (1000, 333), (1000, 7), (100, 30), (10, 3)])
def test_spacing_properties(train, sample):
    linspace, leading, trailing, quadratic = (timestep_sequence(train, sample, s).tolist()
                                              for s in ("linspace", "leading", "trailing", "quadratic"))
    # linspace: both ends, evenly strided up to rounding
    gaps = -np.diff(linspace)
    assert linspace[0] == train - 1 and linspace[-1] == 0 and gaps.max() - gaps.min() <= 1
    # leading: multiples of T // S from 0 (DDIM's uniform skip)
    assert leading[::-1] == [i * (train // sample) for i in range(sample)]
    # trailing: from T - 1, strides within rounding of T / S, ending at round(T / S) - 1
    gaps = -np.diff(trailing)
    assert trailing[0] == train - 1 and trailing[-1] == round(train / sample) - 1
    assert np.abs(gaps - train / sample).max() <= 1
    # quadratic: squares of an even grid, from round(0.8 T); collisions near 0 nudged up by one
    squares = np.round(np.linspace(0, math.sqrt(0.8 * train), sample) ** 2).astype(int)
    assert quadratic[0] == round(0.8 * train) and quadratic[-1] == 0
    assert all(q == r or (q > r and q <= r + sample) for q, r in zip(quadratic[::-1], squares))
    assert all(q == r for q, r in zip(quadratic[::-1], squares) if r >= sample)


def test_logsnr_spacing_is_even_in_lambda():
    alpha_bar = GaussianDiffusion(linear_betas(1000)).schedule.alpha_bar
    steps = timestep_sequence(1000, 20, "logsnr", alpha_bar=alpha_bar)
    assert steps[0] == 999 and steps[-1] == 0
    lam = 0.5 * (alpha_bar.log() - torch.log1p(-alpha_bar))
    gaps = np.diff(lam[steps].numpy())  # lambda grows as t falls
    assert (gaps > 0).all() and gaps.max() / gaps.mean() < 1.6
    # the linspace grid leaves the low-noise end (lambda > 2) to a single step; logsnr spends several
    assert (lam[steps] > 2).sum() >= 4 > (lam[timestep_sequence(1000, 20)] > 2).sum()
    with pytest.raises(ValueError, match="alpha_bar"):
        timestep_sequence(1000, 20, "logsnr")


def test_spacings_match_the_papers_examples():
    assert timestep_sequence(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert timestep_sequence(1000, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    # Lin et al. 2024's trailing example (T = 1000, 10 steps)
    assert timestep_sequence(1000, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timestep_sequence(1000, 10, "quadratic").tolist() == [800, 632, 484, 356, 247, 158, 89, 40, 10, 0]
    assert timestep_sequence(1000, 100, "quadratic").tolist()[-6:] == [5, 4, 3, 2, 1, 0]  # nudged apart
    assert timestep_sequence(1000, 1).tolist() == [999]
    # quadratic-trailing by hand: round(999 (k / 10)^2) for k = 10 .. 1
    assert timestep_sequence(1000, 10, "quadratic-trailing").tolist() == [999, 809, 639, 490, 360, 250, 160, 90, 40, 10]
    assert timestep_sequence(1000, 1, "quadratic-trailing").tolist() == [999]
    assert timestep_sequence(1000, 100, "quadratic-trailing").tolist()[-4:] == [3, 2, 1, 0]  # nudged up
    with pytest.raises(ValueError, match="linspace, leading, trailing, quadratic"):
        timestep_sequence(1000, 10, "karras")


# -- CUDA ---------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_samplers_on_cuda(sampler, options):
    process = make_process("linear")
    network = GaussianOracle(process, MUS.cuda(), S.cuda(), null_class=NULL)
    network.alpha_bar = process.schedule.alpha_bar.cuda()
    labels = torch.tensor([0, 1] * 6, device="cuda")
    taus = timestep_sequence(T, 20)

    def draw(indices):
        indices = list(indices)
        return sampler(network, process, per_sample_noise(5, indices, SHAPE, device="cuda"), taus,
                       class_labels=labels[indices], guidance_scale=2.0, x0_clip="dynamic",
                       generator=PerSampleGenerator(5, indices, device="cuda"), **options)

    whole = draw(range(12))
    assert whole.device.type == "cuda" and torch.isfinite(whole).all() and whole.abs().max() <= 1
    torch.testing.assert_close(torch.cat([draw(range(5)), draw(range(5, 12))]), whole, rtol=0, atol=1e-5)
    noise = torch.randn(12, *SHAPE, device="cuda")
    plain = sampler(network, process, noise, taus, class_labels=labels, guidance_scale=2.0,
                    generator=torch.Generator(device="cuda").manual_seed(0), **options)
    assert plain.device.type == "cuda" and torch.isfinite(plain).all()


def test_first_order_sde_steps_of_dpm_solver_are_ddpm():
    # At eta = 1 a first-order SDE-DPM-Solver++ step is the DDPM posterior step with sigma^2 = beta_tilde
    # (Ho et al. 2020, eq. 7, between the visited timesteps), one draw per step from the same generator: with
    # 1 or 2 timesteps every step is first order, so the samples equal ddpm_sample's. Data with means 3 * MU
    # (up to 1.2) make the static clipping bite.
    process = make_process("cosine")
    noise = torch.randn(64, *SHAPE, generator=seeded(34), dtype=torch.float64)
    sde = get_sampler("dpm++2m-sde")
    for mu, x0_clip in ((MU, "none"), (3 * MU, "static")):
        network = GaussianOracle(process, mu.unsqueeze(0), S)
        for taus in (timestep_sequence(T, 1), timestep_sequence(T, 2), timestep_sequence(T, 2, "trailing")):
            torch.testing.assert_close(sde(network, process, noise, taus, generator=seeded(35), x0_clip=x0_clip),
                                       ddpm_sample(network, process, noise, taus, generator=seeded(35),
                                                   x0_clip=x0_clip), rtol=1e-9, atol=1e-9)


SDE_N = 20000  # samples: the sampling error of a variance is then ~1%


def sde_moments(sampler, schedule: str, taus) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ``|mean - mu|`` and ``var / s^2 - 1`` of SDE_N samples drawn by ``sampler`` with the exact
    denoiser of the image-like Gaussian data of the ODE tests (the same noise and draws for every sampler)."""
    process = make_process(schedule)
    network = GaussianOracle(process, IMAGE_MU.unsqueeze(0), IMAGE_S)
    noise = torch.randn((SDE_N, *SHAPE), generator=seeded(40), dtype=torch.float64)
    x = sampler(network, process, noise, taus, generator=seeded(41), x0_clip="none").double()
    return (x.mean(0) - IMAGE_MU[0].double()).abs(), x.var(0) / IMAGE_S[0].double() ** 2 - 1


@pytest.mark.parametrize("name", ["dpm++2m-sde", "dpm++3m-sde"])
def test_sde_dpm_solvers_reproduce_gaussian_data_at_100_steps(name):
    """SDE-DPM-Solver++(2M) and (3M) (k-diffusion's dpmpp_3m_sde in the VP form), cosine schedule, 100 steps:
    the mean within sampling error, the variance within 5% of s^2 (2M measured +0.7 .. +2.2%)."""
    mean_error, var_error = sde_moments(get_sampler(name), "cosine", timestep_sequence(T, 100))
    assert mean_error.max() < 4 * IMAGE_S.max().item() / math.sqrt(SDE_N)
    assert var_error.abs().max() < 0.05


@pytest.mark.parametrize("order", [2, 3])
def test_more_fresh_noise_than_the_sde_keeps_the_marginals(order):
    """eta = 2 (more fresh noise per step than the SDE) with the exact denoiser, cosine schedule, 100 steps: the
    data's closed-form mean and variance (within sampling error and 5%, as eta = 1 above); and at 10 steps it
    is a different sampler from eta = 1 on the same noise."""
    sampler = partial(dpm_solver_pp_2m_sample, eta=2.0, order=order)
    mean_error, var_error = sde_moments(sampler, "cosine", timestep_sequence(T, 100))
    assert mean_error.max() < 4 * IMAGE_S.max().item() / math.sqrt(SDE_N)
    assert var_error.abs().max() < 0.05
    ten = timestep_sequence(T, 10)
    assert not torch.allclose(sde_moments(sampler, "cosine", ten)[1],
                              sde_moments(partial(dpm_solver_pp_2m_sample, eta=1.0, order=order), "cosine", ten)[1])


def test_sde_dpm_solver_beats_first_order_at_20_steps():
    """At 20 steps on the even-in-lambda grid of the linear schedule SDE-DPM-Solver++(2M)'s variance is within
    12% of s^2 (measured +3.6 .. +8.2%), where ancestral DDPM (the same SDE, first order) under-disperses by
    36-39%; (3M) on the cosine schedule's default grid within 16% (measured +3.6 .. +12.2%)."""
    taus = logsnr_timesteps(make_process("linear").schedule.alpha_bar, 20)
    second = sde_moments(get_sampler("dpm++2m-sde"), "linear", taus)[1].abs()
    first = sde_moments(ddpm_sample, "linear", taus)[1].abs()
    assert second.max() < 0.12 and first.min() > 0.3
    third = sde_moments(get_sampler("dpm++3m-sde"), "cosine", timestep_sequence(T, 20))[1].abs()
    assert third.max() < 0.16
