"""Learned reverse variance, the VLB / hybrid losses and the likelihood in bits/dim (Nichol & Dhariwal 2021).

Every check is against an independent answer: torch.distributions, sums that must be 1, schedules recomputed
here from the betas, and the closed-form optimal denoiser of Gaussian data, whose bound is known exactly.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from dreamdata.cli import main
from dreamdata.config import load_config
from dreamdata.evaluation.likelihood import nll_timesteps, vlb_terms
from dreamdata.process import GaussianDiffusion, cosine_betas, linear_betas
from dreamdata.process.importance import LossSecondMomentSampler
from dreamdata.process.likelihood import (discretized_gaussian_log_likelihood, gaussian_log_likelihood,
                                          normal_kl)
from dreamdata.sampling import ddim_sample, ddpm_sample, dpm_solver_pp_2m_sample
from dreamdata.training import checkpoint as ckpt
from dreamdata.training.run_dir import read_metrics
from dreamdata.training.trainer import train

LN2 = math.log(2.0)
# Per-pixel data x0 ~ N(MU, S^2), images [1, 2, 2]; S <= 1, so the optimal reverse variance lies in
# [beta_tilde, beta] and learned_range can represent it exactly (Nichol & Dhariwal 2021, sec. 3.1).
MU = torch.tensor([-0.3, 0.1, 0.4, 0.0], dtype=torch.float64).view(1, 1, 2, 2)
S = torch.tensor([0.2, 0.3, 0.15, 0.25], dtype=torch.float64).view(1, 1, 2, 2)


def hand_schedule(betas: torch.Tensor) -> dict[str, torch.Tensor]:
    """alpha_bar, alpha_bar_prev, beta_tilde (index 0 clipped to index 1's) straight from the definitions."""
    betas = betas.double()
    alpha_bar = torch.cumprod(1 - betas, 0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar) * betas
    clipped = beta_tilde.clone()
    clipped[0] = beta_tilde[1]
    return {"betas": betas, "alpha_bar": alpha_bar, "alpha_bar_prev": alpha_bar_prev, "beta_tilde": clipped}


class GaussianOptimum:
    """The exact reverse process of data ``x0 ~ N(MU, S^2)``: ``E[eps | x_t]`` and (``learned``) the raw variance
    channels that make ``Sigma_theta`` the true ``Var(x_{t-1} | x_t) = beta_tilde + c0^2 Var(x0 | x_t)``
    (at index 0, ``Var(x0 | x_1)``), tabulated per t."""

    def __init__(self, betas: torch.Tensor, learned: bool):
        h = hand_schedule(betas)
        ab, ab_prev, beta = (h[k].view(-1, 1, 1, 1) for k in ("alpha_bar", "alpha_bar_prev", "betas"))
        self.alpha_bar, self.learned = ab, learned
        var_x0 = S ** 2 * (1 - ab) / (ab * S ** 2 + 1 - ab)  # Var(x0 | x_t) of a Gaussian prior
        c0 = beta * ab_prev.sqrt() / (1 - ab)  # posterior-mean coefficient of x0 (Ho et al. eq. 7)
        optimum = (1 - ab_prev) / (1 - ab) * beta + c0 ** 2 * var_x0
        optimum[0] = var_x0[0]
        log_low, log_high = h["beta_tilde"].log().view(-1, 1, 1, 1), beta.log()
        fraction = (optimum.log() - log_low) / (log_high - log_low)  # solve eq. 15 for v
        assert fraction.min() > -1e-9 and fraction.max() < 1 + 1e-9
        self.raw = 2 * fraction - 1  # [T, 1, 2, 2]

    def __call__(self, x, t, class_labels):
        ab = self.alpha_bar[t]
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * MU) / (ab * S ** 2 + 1 - ab)
        return torch.cat([eps, self.raw[t].expand_as(eps)], dim=1) if self.learned else eps


# ----------------------------------------------------------------------------------------------------
# The maths helpers


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(2, 500, generator=g, dtype=torch.float64)
    lv1, lv2 = 3 * torch.randn(2, 500, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-10, atol=1e-12)


def test_gaussian_log_likelihood_matches_torch_distributions():
    x, mean, log_scale = torch.randn(3, 100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, log_scale), Normal(mean, log_scale.exp()).log_prob(x))


@pytest.mark.parametrize("mean, scale", [(0.0, 0.3), (0.37, 0.004), (-0.99, 0.02), (1.7, 0.05), (-3.0, 2.0),
                                         (0.5, 1e-4), (0.2, 30.0)])
def test_discretized_gaussian_probabilities_sum_to_one_over_the_256_bins(mean, scale):
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0  # every 8-bit value, in [-1, 1]
    log_p = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, math.log(scale)))
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    # each bin's mass is the normal CDF difference over [x - 1/255, x + 1/255], the edge bins open to +-inf
    normal = Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    edges = torch.cat([torch.tensor([-math.inf]), (x[:-1] + x[1:]) / 2, torch.tensor([math.inf])]).double()
    expected = normal.cdf(edges[1:]) - normal.cdf(edges[:-1])
    torch.testing.assert_close(log_p.exp(), expected, rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# Variances and the terms of the bound


def test_learned_range_at_v_zero_and_one_gives_beta_tilde_and_beta():
    betas = linear_betas(100)
    h = hand_schedule(betas)
    process = GaussianDiffusion(betas, variance="learned_range", loss="hybrid")
    t = torch.arange(100)
    x = torch.zeros(100, 1, 1, 1, dtype=torch.float64)
    ones = torch.ones_like(x)
    # raw network output -1, 0, 1 is v = 0, 1/2, 1 (v = (raw + 1) / 2)
    torch.testing.assert_close(process.log_variance(t, x, -ones).flatten(), h["beta_tilde"].log())
    torch.testing.assert_close(process.log_variance(t, x, ones).flatten(), h["betas"].log())
    torch.testing.assert_close(process.log_variance(t, x, 0 * ones).flatten(),
                               0.5 * (h["betas"].log() + h["beta_tilde"].log()))  # eq. 15: the geometric mean
    small = GaussianDiffusion(betas, variance="fixed_small").log_variance(t, x).flatten()
    large = GaussianDiffusion(betas, variance="fixed_large").log_variance(t, x).flatten()
    torch.testing.assert_close(small, h["beta_tilde"].log())
    torch.testing.assert_close(large[1:], h["betas"][1:].log())
    assert float(large[0]) == pytest.approx(float(h["beta_tilde"][0].log()))  # index 0: beta_tilde_1, as iDDPM


def test_prior_kl_and_the_terms_at_the_true_posterior_mean_are_closed_forms():
    betas = cosine_betas(40)
    h = hand_schedule(betas)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 256, (6, 1, 3, 3), generator=g).double() / 127.5 - 1
    t = torch.tensor([1, 5, 10, 20, 30, 39])
    x_t = GaussianDiffusion(betas).q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    ab_T = h["alpha_bar"][-1]
    expected_prior = kl_divergence(Normal(ab_T.sqrt() * x0, (1 - ab_T).sqrt()), Normal(0.0, 1.0)).mean((1, 2, 3))
    for variance in ("fixed_small", "fixed_large"):
        process = GaussianDiffusion(betas, variance=variance)
        torch.testing.assert_close(process.prior_kl(x0), expected_prior / LN2)
        # with x0_hat = x0 the model's mean is the posterior's: only the variances can differ
        terms = process.vlb_term(x0, x_t, t, x0, process.log_variance(t, x_t))
        if variance == "fixed_small":
            torch.testing.assert_close(terms, torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
        else:
            ratio = h["betas"][t] / h["beta_tilde"][t]  # KL(N(m, bt) || N(m, b)) = (log r + 1/r - 1) / 2
            torch.testing.assert_close(terms, 0.5 * (ratio.log() + 1 / ratio - 1) / LN2)


def test_decoder_term_is_the_discretized_likelihood_of_x0_hat():
    betas = cosine_betas(40)
    process = GaussianDiffusion(betas, variance="fixed_small")
    x0 = torch.tensor([-1.0, -0.5, 0.0, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    x0_hat = x0 + torch.tensor([0.004, -0.01, 0.002, -0.003], dtype=torch.float64).view(1, 1, 2, 2)
    t = torch.zeros(1, dtype=torch.long)
    sigma = float(hand_schedule(betas)["beta_tilde"][0].sqrt())
    normal = Normal(x0_hat.flatten(), sigma)
    low = torch.tensor([-math.inf, -0.5 - 1 / 255, -1 / 255, 1 - 1 / 255], dtype=torch.float64)
    high = torch.tensor([-1 + 1 / 255, -0.5 + 1 / 255, 1 / 255, math.inf], dtype=torch.float64)
    expected = -(normal.cdf(high) - normal.cdf(low)).log().mean() / LN2
    got = process.vlb_term(x0, x0, t, x0_hat, process.log_variance(t, x0))
    assert float(got) == pytest.approx(float(expected), rel=1e-9)


def test_optimal_gaussian_denoiser_bound_converges_to_the_true_nll_as_t_grows():
    """With the exact reverse kernels the bound is E[-log q(x0)] + KL(q(x_T) || N(0, I)), at any T (the
    continuous decoder density, since the data are continuous): the gap is the prior mismatch, which shrinks
    as T grows with the DDPM betas (alpha_bar_T = 0.6, 0.13, 4e-5 at T = 50, 200, 1000)."""
    n = 4096
    x0 = MU + S * torch.randn((n, 1, 2, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    true_nll = -Normal(MU, S).log_prob(x0).mean((1, 2, 3)) / LN2  # bits/dim per image
    gaps, stderrs = [], []
    for num_steps in (50, 200, 1000):
        betas = linear_betas(num_steps)
        process = GaussianDiffusion(betas, variance="learned_range", loss="vlb")
        terms = vlb_terms(GaussianOptimum(betas, learned=True), process, x0, None, torch.arange(1, num_steps),
                          torch.Generator().manual_seed(num_steps), x0_clip="none", discretized=False)
        gap = terms.prior + terms.kl.sum(1) + terms.decoder - true_nll
        gaps.append(float(gap.mean()))
        stderrs.append(float(gap.std() / math.sqrt(n)))
        ab_T = hand_schedule(betas)["alpha_bar"][-1]
        prior_gap = kl_divergence(Normal(ab_T.sqrt() * MU, (ab_T * S ** 2 + 1 - ab_T).sqrt()), Normal(0.0, 1.0))
        assert gaps[-1] == pytest.approx(float(prior_gap.mean() / LN2), abs=4 * stderrs[-1])
    assert gaps[0] > gaps[1] + 10 * stderrs[1]  # approaches from above ...
    assert gaps[1] > gaps[2] - 3 * stderrs[2]  # ... monotonically, within the noise
    assert abs(gaps[2]) < 4 * stderrs[2] < 0.05  # and reaches the true NLL at T = 1000


def test_fixed_small_bound_of_the_optimal_mean_is_looser_than_the_learned_variance():
    """Nichol & Dhariwal 2021, sec. 3.1: the first steps of the bound pay for beta_tilde's mismatch."""
    n, num_steps = 2048, 50
    betas = linear_betas(num_steps)
    x0 = MU + S * torch.randn((n, 1, 2, 2), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    totals = {}
    for variance in ("fixed_small", "learned_range"):
        process = GaussianDiffusion(betas, variance=variance, loss="vlb")
        network = GaussianOptimum(betas, learned=variance == "learned_range")
        terms = vlb_terms(network, process, x0, None, torch.arange(1, num_steps), torch.Generator().manual_seed(5),
                          x0_clip="none", discretized=False)
        totals[variance] = terms.prior + terms.kl.sum(1) + terms.decoder
    looser = totals["fixed_small"] - totals["learned_range"]
    assert float(looser.mean()) > 0.5 and float(looser.mean()) > 20 * float(looser.std() / math.sqrt(n))


def test_nll_timesteps_are_stratum_midpoints_and_all_steps_when_k_covers_them():
    assert nll_timesteps(11, 2).tolist() == [3, 8]  # strata [1, 5], [6, 10] of 1..10
    assert nll_timesteps(1000, 4).tolist() == [125, 375, 625, 875]  # 1 + floor((k + 1/2) 999 / 4)
    assert nll_timesteps(11).tolist() == nll_timesteps(11, 10).tolist() == nll_timesteps(11, 50).tolist() \
        == list(range(1, 11))
    with pytest.raises(ValueError, match="nll_steps"):
        nll_timesteps(11, 0)


# ----------------------------------------------------------------------------------------------------
# Training losses


class TwoHeads(torch.nn.Module):
    """Prediction ``a * x_t`` and raw variance ``b`` (one parameter per head), ``2 C`` channels."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3))
        self.b = torch.nn.Parameter(torch.tensor(0.1))

    def forward(self, x, t, class_labels):
        return torch.cat([self.a * x, self.b * torch.ones_like(x)], dim=1)


def _losses_and_gradients(loss: str, vlb_weight: float = 0.001) -> dict:
    """One batch's losses and the two heads' gradients, with L_simple and its gradient in a by hand."""
    process = GaussianDiffusion(cosine_betas(20), variance="learned_range", loss=loss, vlb_weight=vlb_weight)
    g = torch.Generator().manual_seed(6)
    x0 = torch.randint(0, 256, (8, 1, 4, 4), generator=g).float() / 127.5 - 1
    t, noise = torch.arange(8) * 2 + 1, torch.randn(x0.shape, generator=g)
    t[0] = 0  # the decoder term too
    network = TwoHeads()
    losses = process.training_losses(network, x0, None, t=t, noise=noise)
    losses.mean().backward()
    x_t = process.q_sample(x0, t, noise)
    residual = 0.3 * x_t - noise  # epsilon-prediction a x_t - eps at a = 0.3
    return {"losses": losses.detach(), "mse": residual.pow(2).mean((1, 2, 3)), "grad_a": network.a.grad,
            "grad_b": network.b.grad, "mse_grad_a": (2 * residual * x_t).mean()}


def test_hybrid_gradient_reaches_the_variance_head_but_not_the_mean_through_the_bound():
    hybrid = _losses_and_gradients("hybrid")
    assert torch.isfinite(hybrid["losses"]).all() and float(hybrid["grad_b"].abs()) > 0
    # the mean's gradient is L_simple's alone (the bound sees a detached mean)
    assert float(hybrid["grad_a"]) == pytest.approx(float(hybrid["mse_grad_a"]), rel=1e-5)
    # the bound's part is lambda-linear: doubling lambda doubles loss - L_simple
    doubled = _losses_and_gradients("hybrid", vlb_weight=0.002)
    torch.testing.assert_close(doubled["losses"] - hybrid["mse"], 2 * (hybrid["losses"] - hybrid["mse"]),
                               rtol=1e-5, atol=1e-6)
    # without the stop-gradient (loss=vlb) the bound trains the mean as well
    vlb = _losses_and_gradients("vlb")
    assert float(vlb["grad_a"].abs()) > 0 and float(vlb["grad_b"].abs()) > 0


def test_simple_loss_is_bit_identical_to_the_plain_mse():
    """Old configs (no variance/loss keys) train exactly as before: the unweighted MSE to epsilon."""
    process = GaussianDiffusion.from_config(load_config("tiny").process)
    assert (process.variance, process.loss, process.timestep_sampler) == ("fixed_small", "simple", None)
    g = torch.Generator().manual_seed(7)
    x0, noise = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    t = torch.tensor([0, 7, 30, 49])
    network = TwoHeads()

    def plain(x, t, y):
        return network.a * x

    losses = process.training_losses(plain, x0, None, t=t, noise=noise)
    x_t = process.q_sample(x0, t, noise)
    assert torch.equal(losses, (network.a * x_t - noise).pow(2).mean((1, 2, 3)))


def test_importance_sampler_is_uniform_until_warm_then_follows_the_second_moment():
    sampler = LossSecondMomentSampler(4, history=3)
    g = torch.Generator().manual_seed(8)
    t, weights = sampler.sample(5, "cpu", g)
    torch.testing.assert_close(t, torch.randint(0, 4, (5,), generator=torch.Generator().manual_seed(8)))
    assert torch.equal(weights, torch.ones(5))
    values = {0: [1.0, 1.0, 1.0], 1: [2.0, 2.0, 2.0], 2: [3.0, 4.0, 5.0], 3: [0.0, 0.0, 9.0]}
    for step, losses in values.items():
        sampler.update(torch.tensor([step, step]), torch.tensor([99.0, losses[0]]))  # 99 is pushed out below
        sampler.update(torch.tensor([step, step]), torch.tensor(losses[1:]))
    assert sampler.warmed_up()
    rms = torch.tensor([1.0, 2.0, math.sqrt(50 / 3), math.sqrt(27.0)], dtype=torch.float64)
    expected = (rms / rms.sum()) * (1 - 0.001) + 0.001 / 4
    torch.testing.assert_close(sampler.probabilities(), expected)
    t, weights = sampler.sample(200_000, "cpu", torch.Generator().manual_seed(9))
    frequencies = torch.bincount(t, minlength=4).double() / t.numel()
    torch.testing.assert_close(frequencies, expected, atol=4 * math.sqrt(0.25 / t.numel()), rtol=0)
    torch.testing.assert_close(weights, (1 / (4 * expected)).float()[t])  # E_p[w L_t] = mean_t L_t
    copy = LossSecondMomentSampler(4, history=3)
    copy.load_state_dict(sampler.state_dict())
    assert torch.equal(copy.probabilities(), sampler.probabilities())


# ----------------------------------------------------------------------------------------------------
# Samplers


def _oracle_with_variance(process, raw):
    """The optimal epsilon of the MU/S data plus fixed raw variance channels ``raw`` (a float or a callable)."""
    optimum = GaussianOptimum(process.schedule.betas, learned=False)

    def network(x, t, class_labels):
        eps = optimum(x.double(), t, class_labels).to(x.dtype)
        extra = raw(x, t) if callable(raw) else torch.full_like(eps, raw)
        return torch.cat([eps, extra], dim=1)

    return network


def test_respaced_learned_variance_at_full_t_equals_the_full_chain():
    betas = linear_betas(60)
    process = GaussianDiffusion(betas, variance="learned_range", loss="hybrid")
    network = _oracle_with_variance(process, lambda x, t: torch.tanh(3 * x) * 0.9)
    noise = torch.randn((64, 1, 2, 2), generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    got = ddpm_sample(network, process, noise, generator=torch.Generator().manual_seed(11), x0_clip="none")
    # the full chain, step by step from the process's own tables (no respacing code involved)
    generator, x = torch.Generator().manual_seed(11), noise
    for tau in range(59, -1, -1):
        t = torch.full((64,), tau)
        prediction, raw = process.split_output(network(x, t, None), x)
        x0_hat, _ = process.predict_x0_and_eps(prediction, x, t)
        if tau == 0:
            x = x0_hat
            break
        mean, _, _ = process.q_posterior(x0_hat, x, t)
        std = torch.exp(0.5 * process.log_variance(t, x, raw))
        x = mean + std * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    torch.testing.assert_close(got, x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("raw, fixed", [(-1.0, "beta_tilde"), (1.0, "beta")])
def test_learned_variance_interpolates_the_respaced_chains_beta_tilde_and_beta(raw, fixed):
    process = GaussianDiffusion(cosine_betas(100), variance="learned_range", loss="hybrid")
    network = _oracle_with_variance(process, raw)
    noise = torch.randn((32, 1, 2, 2), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    steps = [99, 80, 51, 30, 12, 4, 0]
    learned = ddpm_sample(network, process, noise, steps, generator=torch.Generator().manual_seed(13))
    reference = ddpm_sample(network, process, noise, steps, generator=torch.Generator().manual_seed(13),
                            variance=fixed)
    torch.testing.assert_close(learned, reference, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler", [ddim_sample, dpm_solver_pp_2m_sample])
@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_ddim_and_dpm_solver_ignore_the_variance_channels(sampler, guidance):
    learned = GaussianDiffusion(linear_betas(50), variance="learned_range", loss="hybrid")
    fixed = GaussianDiffusion(linear_betas(50))
    shifts = torch.tensor([0.0, 0.2, -0.1]).view(3, 1, 1, 1)

    def conditional(network):  # class c shifts the prediction; class 2 is the null class
        def call(x, t, y):
            out = network(x, t, y)
            return out + shifts[y] if out.shape[1] == x.shape[1] else torch.cat(
                [out[:, :1] + shifts[y], out[:, 1:] + 5 * shifts[y]], 1)
        return call

    noise = torch.randn((16, 1, 2, 2), generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    labels = torch.tensor([0, 1] * 8)
    with_variance = conditional(_oracle_with_variance(learned, lambda x, t: torch.sin(7 * x)))
    optimum = GaussianOptimum(fixed.schedule.betas, learned=False)
    without = conditional(lambda x, t, y: optimum(x, t, y))
    kwargs = dict(class_labels=labels, guidance_scale=guidance, null_class=2)
    a = sampler(with_variance, learned, noise, [49, 30, 10, 0], **kwargs)
    b = sampler(without, fixed, noise, [49, 30, 10, 0], **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_guided_ddpm_uses_the_conditional_variance():
    """GLIDE: guidance extrapolates the prediction only; the variance is the conditional model's. A network
    whose unconditional variance channels are +1 (beta) and conditional ones -1 (beta_tilde) then samples as
    the beta_tilde chain does with the same guided mean."""
    process = GaussianDiffusion(linear_betas(50), variance="learned_range", loss="hybrid")
    optimum = GaussianOptimum(process.schedule.betas, learned=False)

    def network(x, t, y):
        eps = optimum(x, t, y) + 0.1 * (y == 0).view(-1, 1, 1, 1)
        return torch.cat([eps, torch.where(y == 1, 1.0, -1.0).view(-1, 1, 1, 1).expand_as(eps).double()], 1)

    noise = torch.randn((8, 1, 2, 2), generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    labels = torch.zeros(8, dtype=torch.long)
    kwargs = dict(class_labels=labels, guidance_scale=1.5, null_class=1, x0_clip="none")
    steps = [49, 20, 5, 0]
    learned = ddpm_sample(network, process, noise, steps, generator=torch.Generator().manual_seed(16), **kwargs)
    tilde = ddpm_sample(network, process, noise, steps, generator=torch.Generator().manual_seed(16),
                        variance="beta_tilde", **kwargs)
    torch.testing.assert_close(learned, tilde, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------------
# Training runs, resume, and `evaluate --nll`


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)]


@pytest.mark.parametrize("extra", [
    ["process.variance=learned_range", "process.loss=hybrid"],
    ["process.variance=learned_range", "process.loss=vlb", "process.importance_sampling=true",
     "process.num_steps=4"],
], ids=["hybrid", "vlb-importance-sampled"])
def test_resumed_run_matches_the_uninterrupted_one(tiny_overrides, extra):
    overrides = tiny_overrides + extra + ["train.steps=16", "train.sample_grid=false", "train.log_every=2",
                                          "train.checkpoint_every=0", "train.val_every=4"]
    uninterrupted = train(load_config("tiny", overrides))
    interrupted = train(load_config("tiny", overrides), stop_at_step=10)
    resumed = train(load_config("tiny", overrides), resume=interrupted.run_dir)
    assert resumed.step == 16 and _losses(resumed.run_dir) == _losses(uninterrupted.run_dir)
    a = ckpt.load_weights(ckpt.latest_checkpoint(uninterrupted.run_dir))
    b = ckpt.load_weights(ckpt.latest_checkpoint(resumed.run_dir))
    for name in a.ema:
        assert torch.equal(a.ema[name], b.ema[name]), name
    if "process.importance_sampling=true" in extra:  # the history was full before the interruption, and saved
        state = torch.load(interrupted.run_dir / "checkpoints" / "step-000000010.state.pt", weights_only=True)
        assert state["timestep_sampler"]["counts"].tolist() == [10] * 4


def _run(runs_dir, name):
    return next(path for path in runs_dir.iterdir() if path.name.endswith(name))


def test_train_and_evaluate_nll_end_to_end(tiny_overrides, tmp_path, capsys):
    assert main(["train", "tiny", *tiny_overrides, "process.variance=learned_range", "process.loss=hybrid",
                 "train.steps=3", "train.sample_grid=false", "name=learned"]) == 0
    run = _run(tmp_path / "runs", "learned")
    assert main(["evaluate", str(run), "--nll", "--nll-steps", "10", "--n", "12", "--batch", "5"]) == 0
    out = capsys.readouterr()
    assert "estimate" in out.err and "NLL bound" in out.out
    folder = run / "eval" / "nll-10steps-n12-seed0-step3"
    record = json.loads((folder / "nll.json").read_text())
    assert (folder / "nll.png").stat().st_size > 0
    assert record["estimate"] and record["nll_steps"] == 10 and record["n"] == 12 and record["num_steps"] == 50
    assert record["bits_per_dim"] == pytest.approx(record["prior_bpd"] + record["kl_sum_bpd"] + record["decoder_bpd"])
    assert record["kl_sum_bpd"] == pytest.approx(sum(record["terms"]["bpd"][1:]) * 49 / 10)
    assert record["terms"]["t"] == [0, *nll_timesteps(50, 10).tolist()]
    assert all(value > 0 for value in record["terms"]["bpd"]) and record["variance"] == "learned_range"


def test_evaluate_nll_scores_fixed_variance_runs_and_refuses_what_it_cannot(tiny_overrides, capsys, tmp_path):
    assert main(["train", "tiny", *tiny_overrides, "train.steps=2", "train.sample_grid=false", "name=fixed",
                 "process.num_steps=8"]) == 0
    run = _run(tmp_path / "runs", "fixed")
    out = tmp_path / "nll" / "nll.json"
    assert main(["evaluate", str(run), "--nll", "--n", "6", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert not record["estimate"] and record["terms"]["t"] == list(range(8)) and record["variance"] == "fixed_small"
    assert out.with_suffix(".png").is_file()
    capsys.readouterr()
    for arguments, message in ((["--nll-steps", "0"], "--nll-steps must be a positive integer"),
                               (["--sampler", "ddim"], "--sampler: --nll scores test images")):
        assert main(["evaluate", str(run), "--nll", *arguments]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main(["evaluate", str(run), "--nll-steps", "3"]) == 2
    assert "--nll-steps applies with --nll only" in capsys.readouterr().err
    assert main(["train", "tiny", *tiny_overrides, "train.steps=1", "train.sample_grid=false", "name=blur",
                 "process.kind=blur", "process.num_steps=4"]) == 0
    blur = _run(tmp_path / "runs", "blur")
    capsys.readouterr()
    assert main(["evaluate", str(blur), "--nll"]) == 2
    err = capsys.readouterr().err.strip()
    assert "process.kind=blur" in err and len(err.splitlines()) == 1


def test_class_mixture_carries_the_variance_channels():
    from dreamdata.sampling.interpolate import ClassMixture

    class Labelled(torch.nn.Module):  # prediction = label, variance channels = -label
        in_channels, image_size, null_class = 1, 2, 3

        def forward(self, x, t, y):
            value = y.double().view(-1, 1, 1, 1).expand_as(x)
            return torch.cat([value, -value], dim=1)

    mixture = ClassMixture(Labelled(), 0, 2, torch.tensor([0.25, 0.5]))
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    out = mixture(x, torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, -1]))
    assert out.shape == (3, 2, 2, 2)
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(out[:, 1, 0, 0], torch.tensor([-0.5, -1.0, -3.0], dtype=torch.float64))
