"""Tests of the GAN building blocks (:mod:`dreamdata.gan`): networks, conditional batch norm, losses and
DiffAugment.

Every check compares against an answer worked out independently of the code under test: shapes from
the layout, losses from their formulas on hand-picked logits, the R1 penalty of discriminators whose
gradient is known in closed form, augmentations against hand-made shifts and masks, batch-norm outputs and
statistics recomputed from captured activations. Two tiny training runs check that the pieces learn.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dreamdata.gan import (
    GAN_LOSSES,
    POLICIES,
    ConditionalBatchNorm2d,
    DCGANDiscriminator,
    DCGANGenerator,
    diff_augment,
    discriminator_loss,
    generator_loss,
    parse_policy,
    r1_penalty,
    recalibrate_batch_norm,
)

SIZES = (28, 32, 64)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- networks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", (1, 3))
@pytest.mark.parametrize("num_classes", (0, 3))
def test_generator_and_discriminator_shapes(size, channels, num_classes):
    G = DCGANGenerator(channels, size, num_classes=num_classes, latent_dim=6, width=4)
    D = DCGANDiscriminator(channels, size, num_classes=num_classes, width=4)
    labels = torch.tensor([0, 2, 1]) if num_classes else None
    images = G(torch.randn(3, 6, generator=seeded(0)), labels)
    assert images.shape == (3, channels, size, size)
    assert images.abs().max() < 1  # tanh output
    assert D(images, labels).shape == (3,)
    assert (G.in_channels, G.out_channels, G.image_size) == (channels, channels, size)
    assert (G.num_classes, G.null_class, G.latent_dim, G.start_shape) == (num_classes, num_classes, 6, (6,))
    assert (D.in_channels, D.image_size, D.num_classes) == (channels, size, num_classes)


def test_generator_layout_follows_the_size_table():
    # 28 px: 7 -> 14 -> 28; 32 px: 4 -> 8 -> 16 -> 32; 64 px: four up-samplings from 4.
    for size, first_side, upsamplings in ((28, 7, 2), (32, 4, 3), (64, 4, 4)):
        G = DCGANGenerator(1, size, width=8)
        shapes = []
        for conv in G.upsample:
            conv.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
        G(torch.zeros(2, G.latent_dim))
        expected = [(8 * 2 ** (upsamplings - 1) // 2 ** (k + 1), first_side * 2 ** (k + 1), first_side * 2 ** (k + 1))
                    for k in range(upsamplings)]
        assert shapes == expected


def test_discriminator_reaches_4x4_and_pools_per_example():
    D = DCGANDiscriminator(1, 28, width=4, spectral_norm=False)
    sides = []
    D.convs[-1].register_forward_hook(lambda m, i, o: sides.append(tuple(o.shape[1:])))
    x = torch.randn(4, 1, 28, 28, generator=seeded(1))
    D(x)
    assert sides == [(16, 4, 4)]  # width 4 doubled twice, 28 -> 14 -> 7 -> 4
    # No batch norm: each example's logit is independent of the others in the batch.
    torch.testing.assert_close(D(x)[1:2], D(x[1:2]))


def test_projection_discriminator_adds_the_class_inner_product():
    D = DCGANDiscriminator(1, 32, num_classes=2, width=4, spectral_norm=False)
    x = torch.randn(2, 1, 32, 32, generator=seeded(2))
    features = []
    D.convs[-1].register_forward_hook(lambda m, i, o: features.append(D.activation(o).sum(dim=(2, 3))))
    logits = D(x, torch.tensor([1, 0]))
    h = features[0]
    expected = h @ D.linear.weight[0] + D.linear.bias[0] + (D.embed.weight[[1, 0]] * h).sum(1)
    torch.testing.assert_close(logits, expected)


def test_spectral_norm_bounds_the_discriminator_layers():
    D = DCGANDiscriminator(3, 32, num_classes=2, width=4)
    for _ in range(30):  # power iteration converges during training-mode forward passes
        D(torch.randn(2, 3, 32, 32, generator=seeded(3)), torch.tensor([0, 1]))
    weight = D.linear.weight.detach()
    assert torch.linalg.matrix_norm(weight, ord=2) == pytest.approx(1.0, abs=1e-3)
    conv = D.convs[0].weight.detach().flatten(1)
    assert torch.linalg.matrix_norm(conv, ord=2) == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("network", (DCGANGenerator, DCGANDiscriminator))
def test_unsupported_size_names_the_supported_ones(network):
    with pytest.raises(ValueError, match=r"28, 32, 64; got image_size=30"):
        network(1, 30)


def test_bad_inputs_raise_clear_errors():
    G = DCGANGenerator(1, 28, num_classes=2, latent_dim=6, width=4)
    with pytest.raises(ValueError, match=r"\[batch, 6\]"):
        G(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_labels"):
        G(torch.randn(2, 6))
    with pytest.raises(ValueError, match="0..1"):
        G(torch.randn(2, 6), torch.tensor([0, 2]))  # 2 is the null class, which G has no embedding for
    D = DCGANDiscriminator(1, 28, num_classes=2, width=4)
    with pytest.raises(ValueError, match="class_labels"):
        D(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="0..1"):
        D(torch.zeros(2, 1, 28, 28), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"\[batch, 1, 28, 28\]"):
        D(torch.zeros(2, 3, 28, 28), torch.tensor([0, 1]))


# -- conditional batch norm ----------------------------------------------------------------------------


def test_conditional_batch_norm_matches_the_formula():
    layer = ConditionalBatchNorm2d(3, num_classes=2)
    assert torch.equal(layer.gain.weight, torch.ones(2, 3)) and torch.equal(layer.bias.weight, torch.zeros(2, 3))
    gain = torch.tensor([[2.0, -1.0, 0.5], [3.0, 1.5, -2.0]])
    bias = torch.tensor([[0.1, 0.2, 0.3], [-1.0, 0.0, 4.0]])
    with torch.no_grad():
        layer.gain.weight.copy_(gain)
        layer.bias.weight.copy_(bias)
    x = torch.randn(4, 3, 5, 5, generator=seeded(4)) * 3 + 1
    labels = torch.tensor([1, 0, 0, 1])
    out = layer.train()(x, labels)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)  # biased, as BN normalises with
    normalised = (x - mean) / torch.sqrt(var + 1e-5)
    expected = gain[labels][:, :, None, None] * normalised + bias[labels][:, :, None, None]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="class_labels"):
        layer(x)


def test_unconditional_batch_norm_is_plain_affine_batch_norm():
    layer = ConditionalBatchNorm2d(2)
    x = torch.randn(3, 2, 4, 4, generator=seeded(5))
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(layer(x, torch.tensor([7, 7, 7])), (x - mean) / torch.sqrt(var + 1e-5))


@pytest.mark.parametrize("start_in_eval", (True, False))
def test_recalibrate_batch_norm_gives_the_pooled_statistics(start_in_eval):
    G = DCGANGenerator(1, 28, num_classes=3, latent_dim=6, width=4)
    layers = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():  # stale statistics, as an EMA generator would have copied from the live one
        for layer in layers:
            layer.running_mean.fill_(5.0)
            layer.running_var.fill_(9.0)
    inputs = {layer: [] for layer in layers}
    hooks = [layer.register_forward_pre_hook(lambda m, args: inputs[m].append(args[0].double()))
             for layer in layers]
    G.train(not start_in_eval)
    rng_state = torch.get_rng_state()
    recalibrate_batch_norm(G, batches=3, batch_size=5, seed=11)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert all(m.training == (not start_in_eval) for m in G.modules())
    for hook in hooks:
        hook.remove()
    for layer in layers:
        assert len(inputs[layer]) == 3 and layer.momentum == 0.1
        # torch's cumulative average: the mean of the per-batch means (= the mean over all batches, the
        # batches being equal in size) and the mean of the per-batch unbiased variances.
        means = torch.stack([a.mean(dim=(0, 2, 3)) for a in inputs[layer]])
        variances = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in inputs[layer]])
        pooled = torch.cat(inputs[layer]).mean(dim=(0, 2, 3))
        torch.testing.assert_close(layer.running_mean.double(), pooled, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_mean.double(), means.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), variances.mean(0), rtol=1e-4, atol=1e-5)


def test_recalibrate_batch_norm_draws_only_from_its_seed():
    G = DCGANGenerator(1, 28, num_classes=2, latent_dim=6, width=4)
    layer = G.project_norm.batch_norm

    def statistics(seed):
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        recalibrate_batch_norm(G, batches=2, batch_size=4, seed=seed)
        return layer.running_mean.clone()

    assert torch.equal(statistics(0), statistics(0))
    assert not torch.equal(statistics(0), statistics(1))


# -- losses --------------------------------------------------------------------------------------------


def test_losses_at_zero_logits_are_log_2():
    zero = torch.zeros(3)
    torch.testing.assert_close(discriminator_loss(zero, zero, "non_saturating"), torch.full((3,), 2 * math.log(2)))
    torch.testing.assert_close(generator_loss(zero, "non_saturating"), torch.full((3,), math.log(2)))
    torch.testing.assert_close(discriminator_loss(zero, zero, "hinge"), torch.full((3,), 2.0))
    torch.testing.assert_close(generator_loss(zero, "hinge"), torch.zeros(3))


def test_non_saturating_losses_on_hand_numbers():
    # softplus(-log 3) = log(1 + 1/3); softplus(log 3) = log 4.
    real = torch.tensor([math.log(3), 100.0, -100.0])
    fake = torch.tensor([math.log(3), -100.0, 100.0])
    expected_d = torch.tensor([math.log(4 / 3) + math.log(4), 0.0, 200.0])
    torch.testing.assert_close(discriminator_loss(real, fake, "non_saturating"), expected_d)
    torch.testing.assert_close(generator_loss(fake, "non_saturating"), torch.tensor([math.log(4 / 3), 100.0, 0.0]))


def test_hinge_losses_at_and_around_the_margins():
    real = torch.tensor([1.0, 2.0, -1.0, 0.5])
    fake = torch.tensor([-1.0, -3.0, 0.5, -0.5])
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"), torch.tensor([0.0, 0.0, 3.5, 1.0]))
    torch.testing.assert_close(generator_loss(fake, "hinge"), torch.tensor([1.0, 3.0, -0.5, 0.5]))


def test_unknown_loss_names_the_known_ones():
    assert GAN_LOSSES == ("non_saturating", "hinge")
    with pytest.raises(ValueError, match="non_saturating, hinge"):
        discriminator_loss(torch.zeros(1), torch.zeros(1), "wasserstein")
    with pytest.raises(ValueError, match="non_saturating, hinge"):
        generator_loss(torch.zeros(1), "lsgan")


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    w = torch.randn(2 * 3 * 3, generator=seeded(6), requires_grad=True)
    x = torch.randn(4, 2, 3, 3, generator=seeded(7), requires_grad=True)
    penalty = r1_penalty(x.flatten(1) @ w, x)  # D(x) = <w, x>, grad_x D = w
    torch.testing.assert_close(penalty, torch.full((4,), float(w.detach().pow(2).sum())))
    # create_graph: the penalty is differentiable in D's weights, d/dw ||w||^2 = 2 w per example.
    penalty.sum().backward()
    torch.testing.assert_close(w.grad, 8 * w.detach())


def test_r1_is_per_example():
    x = torch.randn(3, 1, 2, 2, generator=seeded(8), requires_grad=True)
    penalty = r1_penalty(0.5 * x.pow(2).flatten(1).sum(1), x)  # D(x) = ||x||^2 / 2, grad_x D = x
    torch.testing.assert_close(penalty, x.detach().pow(2).flatten(1).sum(1))
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(3), torch.zeros(3, 1, 2, 2))


# -- DiffAugment ---------------------------------------------------------------------------------------


def test_parse_policy():
    assert parse_policy("color,translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("cutout, color") == ("cutout", "color")
    assert parse_policy("none") == () and parse_policy("") == ()
    with pytest.raises(ValueError, match=r"'flip'.*color, translation, cutout"):
        parse_policy("color,flip")
    assert set(POLICIES) == {"color", "translation", "cutout"}


def test_no_policy_is_the_identity():
    x = torch.randn(2, 3, 8, 8, generator=seeded(9))
    for policy in ("none", "", (), []):
        assert torch.equal(diff_augment(x, policy, generator=seeded(0)), x)


@pytest.mark.parametrize("policy", ("color", "translation", "cutout"))
@pytest.mark.parametrize("channels", (1, 3))
def test_each_policy_passes_gradients(policy, channels):
    x = torch.randn(4, channels, 16, 16, generator=seeded(10), requires_grad=True)
    weights = torch.randn(4, channels, 16, 16, generator=seeded(11))
    (diff_augment(x, policy, generator=seeded(12)) * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("policy", ("color", "translation", "cutout", "color,translation,cutout"))
def test_gradcheck_with_fixed_randomness(policy):
    x = torch.randn(2, 3, 8, 8, generator=seeded(13), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda images: diff_augment(images, policy, generator=seeded(14)), (x,))


def hand_shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[i, j] = image[i - dy, j - dx]``, 0 where that index falls outside the image."""
    out = torch.zeros_like(image)
    height, width = image.shape[-2:]
    for i in range(height):
        for j in range(width):
            if 0 <= i - dy < height and 0 <= j - dx < width:
                out[..., i, j] = image[..., i - dy, j - dx]
    return out


def test_translation_moves_a_hot_pixel_by_at_most_an_eighth():
    batch, size, radius = 64, 16, 2  # round(16 / 8) = 2
    hot = torch.zeros(batch, 1, size, size)
    hot[:, 0, 7, 8] = 1.0
    moved = diff_augment(hot, "translation", generator=seeded(15))
    shifts = []
    for b in range(batch):
        assert int((moved[b] != 0).sum()) == 1 and moved[b].max() == 1.0
        i, j = (moved[b, 0] == 1).nonzero()[0].tolist()
        shifts.append((i - 7, j - 8))
    assert {dy for dy, _ in shifts} == set(range(-radius, radius + 1))  # 64 draws cover all 5 values
    assert {dx for _, dx in shifts} == set(range(-radius, radius + 1))
    # The same seed shifts a random batch the same way; compare with shifts made by hand.
    x = torch.randn(batch, 3, size, size, generator=seeded(16))
    shifted = diff_augment(x, "translation", generator=seeded(15))
    for b in (0, 1, 2, 3, 4, 5):
        torch.testing.assert_close(shifted[b], hand_shift(x[b], *shifts[b]), rtol=0, atol=0)


def test_cutout_zeroes_one_clipped_square_of_half_the_side():
    batch, size, side = 64, 16, 8
    x = torch.rand(batch, 3, size, size, generator=seeded(17)) + 0.5  # no zeros of its own
    out = diff_augment(x, "cutout", generator=seeded(18))
    full_squares = 0
    for b in range(batch):
        zero = out[b] == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # same mask on every channel
        rows = zero[0].any(dim=1).nonzero().flatten().tolist()
        cols = zero[0].any(dim=0).nonzero().flatten().tolist()
        assert rows == list(range(rows[0], rows[-1] + 1)) and cols == list(range(cols[0], cols[-1] + 1))
        expected = torch.zeros(size, size, dtype=torch.bool)
        expected[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        assert torch.equal(zero[0], expected)  # a rectangle ...
        for extent in (rows, cols):  # ... of side 8, cut short only by a border
            assert side // 2 <= len(extent) <= side
            if len(extent) < side:
                assert extent[0] == 0 or extent[-1] == size - 1
        full_squares += len(rows) == len(cols) == side
        torch.testing.assert_close(out[b][~zero], x[b][~zero], rtol=0, atol=0)
    assert full_squares > batch // 4


def test_color_is_an_affine_map_with_the_documented_ranges():
    # A constant image stays constant (saturation and contrast scale around its own mean): only the
    # brightness offset b ~ U(-0.5, 0.5) remains.
    constant = torch.full((32, 3, 4, 4), 0.25)
    out = diff_augment(constant, "color", generator=seeded(19))
    offsets = out.flatten(1)[:, 0]
    torch.testing.assert_close(out, offsets[:, None, None, None].expand_as(out))
    assert ((offsets - 0.25).abs() <= 0.5).all() and offsets.std() > 0.1
    # On a 1-channel image saturation is the identity, so color is x -> c (x + b - m) + m + b, with m the
    # image mean: an affine map with slope c in [0.5, 1.5] that fixes the mean up to the offset b.
    x = torch.randn(32, 1, 6, 6, generator=seeded(20))
    y = diff_augment(x, "color", generator=seeded(21))
    centred_x, centred_y = x - x.mean(dim=(2, 3), keepdim=True), y - y.mean(dim=(2, 3), keepdim=True)
    slope = (centred_x * centred_y).sum(dim=(1, 2, 3)) / centred_x.pow(2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(centred_y, slope[:, None, None, None] * centred_x, rtol=1e-4, atol=1e-5)
    assert ((slope >= 0.5) & (slope <= 1.5)).all()
    offset = (y - x).mean(dim=(1, 2, 3))
    assert (offset.abs() <= 0.5).all()


def test_same_seed_same_output_different_seeds_differ():
    x = torch.randn(4, 3, 16, 16, generator=seeded(22))
    policy = "color,translation,cutout"
    first = diff_augment(x, policy, generator=seeded(1))
    assert torch.equal(first, diff_augment(x, policy, generator=seeded(1)))
    assert not torch.equal(first, diff_augment(x, policy, generator=seeded(2)))


# -- training ------------------------------------------------------------------------------------------


def test_discriminator_loss_falls_on_a_separable_toy():
    torch.manual_seed(0)
    D = DCGANDiscriminator(1, 28, width=4)
    optimiser = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.99))
    real, fake = torch.full((8, 1, 28, 28), 0.8), torch.full((8, 1, 28, 28), -0.8)
    losses = []
    for _ in range(30):
        loss = discriminator_loss(D(real), D(fake), "non_saturating").mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


@pytest.mark.slow
def test_conditional_generator_follows_its_labels():
    """Class 0 is dark images, class 1 bright ones; after a short hinge-loss run G(z, 0) is dark."""
    torch.manual_seed(0)
    latent, batch = 8, 8
    G = DCGANGenerator(1, 28, num_classes=2, latent_dim=latent, width=8)
    D = DCGANDiscriminator(1, 28, num_classes=2, width=8)
    optimiser_g = torch.optim.Adam(G.parameters(), lr=4e-3, betas=(0.5, 0.99))
    optimiser_d = torch.optim.Adam(D.parameters(), lr=4e-3, betas=(0.5, 0.99))
    data = seeded(23)
    labels = torch.arange(batch) % 2
    brightness = torch.where(labels == 1, 0.8, -0.8)[:, None, None, None]
    for _ in range(150):
        real = brightness + 0.05 * torch.randn(batch, 1, 28, 28, generator=data)
        fake = G(torch.randn(batch, latent, generator=data), labels)
        loss_d = discriminator_loss(D(real, labels), D(fake.detach(), labels), "hinge").mean()
        optimiser_d.zero_grad()
        loss_d.backward()
        optimiser_d.step()
        loss_g = generator_loss(D(fake, labels), "hinge").mean()
        optimiser_g.zero_grad()
        loss_g.backward()
        optimiser_g.step()
    G.eval()
    recalibrate_batch_norm(G, batches=2, batch_size=64)
    z = torch.randn(64, latent, generator=seeded(24))
    with torch.no_grad():
        dark = G(z, torch.zeros(64, dtype=torch.long)).mean().item()
        bright = G(z, torch.ones(64, dtype=torch.long)).mean().item()
    assert dark < 0 < bright and bright - dark > 0.8


def test_soft_class_weights_mix_the_class_embeddings_of_conditional_batch_norm():
    """One-hot weights are the hard label exactly; weights (1-l, l) give gain and bias (1-l) g_A + l g_B."""
    torch.manual_seed(0)
    layer = ConditionalBatchNorm2d(4, num_classes=3).eval()
    with torch.no_grad():
        layer.gain.weight.uniform_(0.5, 1.5)
        layer.bias.weight.uniform_(-1.0, 1.0)
    x = torch.randn(2, 4, 3, 3)
    hard = layer(x, torch.tensor([0, 2]))
    one_hot = layer(x, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert torch.equal(hard, one_hot)
    lam = 0.25
    mixed = layer(x[:1], torch.tensor([[1 - lam, 0.0, lam]]))
    normalised = (x[:1] - layer.batch_norm.running_mean[None, :, None, None]) / torch.sqrt(
        layer.batch_norm.running_var[None, :, None, None] + layer.batch_norm.eps)
    gain = (1 - lam) * layer.gain.weight[0] + lam * layer.gain.weight[2]
    bias = (1 - lam) * layer.bias.weight[0] + lam * layer.bias.weight[2]
    assert torch.allclose(mixed, gain[None, :, None, None] * normalised + bias[None, :, None, None], atol=1e-6)
