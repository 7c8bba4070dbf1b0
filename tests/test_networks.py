"""Tests of the denoising networks: the call contract, conditioning, layer structure and init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dreamdata.config import ModelConfig
from dreamdata.errors import ConfigError
from dreamdata.networks import (SmallCNN, UNet, build_network, count_parameters, describe_network,
                                timestep_embedding)
from dreamdata.networks.unet import norm_groups

TINY = dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, attention_head_channels=8)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_unet(in_channels=1, image_size=32, num_classes=10, **kw):
    args = dict(TINY, **kw)
    return UNet(in_channels, image_size, num_classes, **args)


def randomise_zero_init(model: nn.Module) -> None:
    """Re-randomise the zero-initialised layers so every path carries signal and gradient."""
    found = 0
    for module in model.modules():
        if getattr(module, "zero_initialised", False):
            found += 1
            for p in module.parameters():
                nn.init.normal_(p, std=0.1)
    assert found > 0 or isinstance(model, SmallCNN)


def inputs(model, batch=3, size=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    size = size or model.image_size
    x = torch.randn(batch, model.in_channels, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, max(model.num_classes, 1), (batch,), generator=g)
    return x, t, y


# ----------------------------------------------------------------------------------------------------
# Contract


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_unet_output_shape(size, channels):
    attn = (7,) if size == 28 else (8,)
    model = tiny_unet(channels, size, 10, attention_resolutions=attn).eval()
    x, t, y = inputs(model, batch=2)
    with torch.no_grad():
        assert model(x, t, y).shape == x.shape
        assert model(x, t).shape == x.shape
    assert (model.in_channels, model.image_size, model.num_classes, model.null_class) == (channels, size, 10, 10)


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_small_cnn_output_shape(size, channels):
    model = SmallCNN(channels, size, 10)
    x, t, y = inputs(model, batch=2)
    assert model(x, t, y).shape == x.shape
    assert model.null_class == 10


def test_unet_initial_output_is_zero():
    model = tiny_unet()
    x, t, y = inputs(model)
    assert torch.count_nonzero(model(x, t, y)) == 0


def test_t_accepts_long_float_and_scalar():
    model = tiny_unet().eval()
    randomise_zero_init(model)
    x, t, y = inputs(model)
    with torch.no_grad():
        a = model(x, t, y)
        torch.testing.assert_close(model(x, t.float(), y), a)
        b = model(x, torch.tensor(5), y)
        torch.testing.assert_close(b, model(x, torch.full((3,), 5), y))


@pytest.mark.parametrize("factory", [tiny_unet, lambda: SmallCNN(1, 28, 10)])
def test_class_conditioning(factory):
    model = factory().eval()
    randomise_zero_init(model)
    x, t, _ = inputs(model)
    with torch.no_grad():
        out0 = model(x, t, torch.zeros(3, dtype=torch.long))
        out1 = model(x, t, torch.ones(3, dtype=torch.long))
        assert not torch.allclose(out0, out1)
        null = torch.full((3,), model.null_class, dtype=torch.long)
        torch.testing.assert_close(model(x, t, null), model(x, t, None))
        assert not torch.allclose(model(x, t, None), out0)


@pytest.mark.parametrize("factory", [lambda: tiny_unet(num_classes=0), lambda: SmallCNN(1, 28, 0)])
def test_unconditional_ignores_labels(factory):
    model = factory().eval()
    randomise_zero_init(model)
    assert model.num_classes == 0 and model.null_class == 0
    x, t, _ = inputs(model)
    with torch.no_grad():
        base = model(x, t, None)
        torch.testing.assert_close(model(x, t, torch.tensor([0, 3, 7])), base)
    assert not any("class" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("factory", [tiny_unet, lambda: SmallCNN(1, 28, 10)])
def test_timestep_changes_output(factory):
    model = factory().eval()
    randomise_zero_init(model)
    x, _, y = inputs(model)
    with torch.no_grad():
        a = model(x, torch.full((3,), 10), y)
        b = model(x, torch.full((3,), 500), y)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("size,mults", [(30, (1, 2, 2)), (28, (1, 2, 2, 2)), (33, (1, 2))])
def test_bad_image_size_raises(size, mults):
    with pytest.raises(ValueError, match=str(size)) as info:
        UNet(1, size, 10, base_channels=8, channel_mults=mults)
    assert str(list(mults)) in str(info.value)
    assert isinstance(info.value, ConfigError)  # so the CLI reports it without a traceback


@pytest.mark.parametrize("scale_shift", [False, True])
def test_gradient_reaches_every_parameter(scale_shift):
    model = tiny_unet(scale_shift=scale_shift, dropout=0.1).train()
    randomise_zero_init(model)
    x, t, y = inputs(model)
    y[0] = model.null_class  # the null row is trained too
    model(x, t, y).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if name.startswith("class_embedding"):
            continue  # only the rows of labels present in the batch get gradient
        assert p.grad.abs().sum() > 0, name


def test_small_cnn_gradient_reaches_every_parameter():
    model = SmallCNN(1, 28, 10)
    x, t, y = inputs(model)
    model(x, t, y).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_channels_last_matches_contiguous():
    model = tiny_unet(dropout=0.0).eval()
    randomise_zero_init(model)
    x, t, y = inputs(model)
    with torch.no_grad():
        expected = model(x, t, y)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last), t, y)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_same_seed_same_init():
    torch.manual_seed(123)
    a = tiny_unet()
    torch.manual_seed(123)
    b = tiny_unet()
    torch.manual_seed(124)
    c = tiny_unet()
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# ----------------------------------------------------------------------------------------------------
# Pieces


def test_sinusoidal_embedding_values():
    emb = timestep_embedding(torch.tensor([0, 1, 7]), 8)
    assert emb.shape == (3, 8)
    torch.testing.assert_close(emb[0, :4], torch.zeros(4))  # sin(0)
    torch.testing.assert_close(emb[0, 4:], torch.ones(4))  # cos(0)
    # dim 8: half = 4 frequencies 10000 ** (-i / 3) = 1, 10000^(-1/3), 10000^(-2/3), 1/10000
    freqs = [1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3), 1e-4]
    torch.testing.assert_close(emb[2, 0], torch.tensor(math.sin(7.0)))
    torch.testing.assert_close(emb[2, 4], torch.tensor(math.cos(7.0)))
    torch.testing.assert_close(emb[2, 3], torch.tensor(math.sin(7e-4)))
    # a fractional timestep, every entry by hand (math in float64, not the function under test)
    expected = [math.sin(2.5 * w) for w in freqs] + [math.cos(2.5 * w) for w in freqs]
    torch.testing.assert_close(timestep_embedding(torch.tensor([2.5]), 8)[0],
                               torch.tensor(expected, dtype=torch.float32))
    # a few literal values (t = 1): sin(1), sin(10000^(-1/3)) = sin(0.0464159), cos(1), cos(0.0464159)
    torch.testing.assert_close(emb[1, [0, 1, 4, 5]], torch.tensor([0.8414710, 0.0463992, 0.5403023, 0.9989230]))
    # a 0-d t is broadcast to one row; dim 2 has the single frequency 1
    torch.testing.assert_close(timestep_embedding(torch.tensor(3.0), 2), torch.tensor([[math.sin(3.0), math.cos(3.0)]]))
    with pytest.raises(ValueError):
        timestep_embedding(torch.tensor([1]), 7)


def test_norm_groups_always_divides():
    for channels in range(1, 513):
        g = norm_groups(channels)
        assert channels % g == 0 and 1 <= g <= 32
    assert [norm_groups(c) for c in (8, 32, 48, 64, 128, 256)] == [2, 8, 12, 16, 32, 32]


def test_attention_at_listed_resolutions_only():
    model = tiny_unet(attention_resolutions=(16,))
    # encoder at 16x16: one block; decoder at 16x16: two blocks; middle: one
    from dreamdata.networks.unet import AttentionBlock
    assert sum(isinstance(m, AttentionBlock) for m in model.modules()) == 1 + 2 + 1
    without = tiny_unet(attention_resolutions=(), mid_attention=False)
    assert sum(isinstance(m, AttentionBlock) for m in without.modules()) == 0


def test_small_cnn_structure_and_parameter_count():
    cin, feat, classes = 3, 32, 10
    model = SmallCNN(cin, 32, classes, time_features=feat)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [7, 7, 7, 7, 3]
    assert [convs[0].in_channels] + [c.out_channels for c in convs] == [cin, 16, 32, 32, 16, cin]
    assert all(c.padding[0] == c.kernel_size[0] // 2 for c in convs)
    linears = [m for m in model.time_mlp if isinstance(m, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(feat, 128), (128, 128), (128, 16)]
    assert sum(isinstance(m, nn.GELU) for m in model.time_mlp) == 2
    expected = (cin * 16 * 49 + 16) + (16 * 32 * 49 + 32) + (32 * 32 * 49 + 32) + (32 * 16 * 49 + 16) \
        + (16 * cin * 9 + cin) \
        + (feat * 128 + 128) + (128 * 128 + 128) + (128 * 16 + 16) \
        + (classes + 1) * 16
    assert count_parameters(model) == expected
    assert count_parameters(SmallCNN(cin, 32, 0, time_features=feat)) == expected - (classes + 1) * 16


# ----------------------------------------------------------------------------------------------------
# Factory


def test_build_network_and_describe():
    config = ModelConfig(base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_head_channels=8)
    model = build_network(config, 3, 32, 10)
    assert isinstance(model, UNet) and model.num_classes == 10 and model.in_channels == 3
    assert model.base_channels == 8 and model.channel_mults == (1, 2)
    text = describe_network(model)
    assert text == f"UNet: {count_parameters(model):,} parameters" and "\n" not in text

    config.class_conditional = False
    assert build_network(config, 1, 28, 10).num_classes == 0

    config.network = "small_cnn"
    small = build_network(config, 1, 28, 10)
    assert isinstance(small, SmallCNN) and small.num_classes == 0
    config.class_conditional = True
    assert build_network(config, 1, 28, 10).null_class == 10

    with pytest.raises(ValueError, match="30"):
        build_network(ModelConfig(), 1, 30, 10)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_gradients_match_finite_differences(scale_shift):
    # The blocks use in-place ops; gradcheck (float64) confirms autograd still gets exact gradients.
    model = UNet(1, 8, 3, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                 attention_head_channels=4, dropout=0.0, scale_shift=scale_shift).double()
    randomise_zero_init(model)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    t, y = torch.tensor([3, 700]), torch.tensor([0, 3])
    assert torch.autograd.gradcheck(lambda inp: model(inp, t, y), (x,), eps=1e-6, atol=1e-5, fast_mode=True)
    # and for the parameters, through the weights of one block of each kind
    names = ["down.0.0.conv1.weight", "up.0.1.qkv.weight", "time_mlp.0.weight"]
    params = dict(model.named_parameters())
    chosen = {n: params[n].detach().clone().requires_grad_() for n in names if n in params}
    assert len(chosen) == len(names), sorted(params)
    x = x.detach()

    def f(*tensors):
        return torch.func.functional_call(model, dict(zip(chosen, tensors)), (x, t, y)).sum()

    assert torch.autograd.gradcheck(f, tuple(chosen.values()), eps=1e-6, atol=1e-5, fast_mode=True)


def test_cpu_dropout_is_unbiased_and_masks_gradient():
    from dreamdata.networks.unet import dropout_
    h = torch.ones(200_000, requires_grad=True)
    out = dropout_(h * 1.0, 0.1, training=True)
    kept = out != 0
    assert abs(kept.float().mean().item() - 230 / 256) < 0.005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 256 / 230))
    out.sum().backward()
    torch.testing.assert_close(h.grad, out.detach())  # d out / d h = mask * scale
    same = torch.ones(10)
    assert dropout_(same, 0.1, training=False) is same


def test_convnext_unet_shape_init_and_gradients():
    from dreamdata.networks import ConvNextBlock

    config = ModelConfig(network="convnext_unet", base_channels=8, channel_mults=[1, 2], num_res_blocks=1,
                         attention_resolutions=[4], attention_head_channels=8, dropout=0.0)
    model = build_network(config, 1, 8, 3)
    blocks = [m for m in model.modules() if isinstance(m, ConvNextBlock)]
    assert isinstance(model, UNet) and len(blocks) == 2 + 2 + 2 * 2  # down, middle, up (2 + 1 per level)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 3, 7, 9])
    assert torch.equal(model(x, t, torch.tensor([0, 1, 2, 3])), torch.zeros_like(x))  # zero-initialised output
    randomise_zero_init(model)
    out = model(x, t, torch.tensor([0, 1, 2, 3]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    block = blocks[0]
    assert block.depthwise.groups == 8 and block.depthwise.kernel_size == (7, 7)
    with pytest.raises(ValueError, match="scale_shift"):
        UNet(1, 8, 0, base_channels=8, channel_mults=(1,), num_res_blocks=1, attention_resolutions=(),
             scale_shift=True, block=ConvNextBlock)


@pytest.mark.parametrize("network", ["unet", "convnext_unet", "small_cnn"])
def test_learned_variance_runs_build_networks_with_twice_the_channels(network):
    from dreamdata.config import load_config
    from dreamdata.training.objectives import build_networks

    fixed = load_config("tiny", [f"model.network={network}"])
    learned = load_config("tiny", [f"model.network={network}", "process.variance=learned_range",
                                   "process.loss=hybrid"])
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0, 7])
    for config, channels in ((fixed, 3), (learned, 6)):
        model = build_networks(config, 3, 8, 4)
        assert model.out_channels == channels and model(x, t, None).shape == (2, channels, 8, 8)
