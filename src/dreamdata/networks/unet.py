"""The DDPM / ADM U-Net denoiser ``(x_t, t, class_labels) -> prediction`` (shaped like ``x_t``, or with
``out_channels`` channels, e.g. ``2 C`` for a learned variance).

Architecture after Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", appendix B, itself a
PixelCNN++ / Wide-ResNet U-Net) with the refinements of Nichol & Dhariwal 2021 ("Improved DDPM") and
Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs", the ADM network):

* an encoder of ``len(channel_mults)`` levels, each ``num_res_blocks`` residual blocks at width
  ``base_channels * mult``, halving the resolution between levels with a strided 3x3 conv;
* a middle block ``ResBlock -> self-attention -> ResBlock`` at the lowest resolution;
* a decoder mirroring the encoder with ``num_res_blocks + 1`` blocks per level, each taking the
  concatenation of the previous activation and one stored encoder activation (the U-Net skips), and
  doubling the resolution between levels with nearest-neighbour upsampling followed by a 3x3 conv;
* multi-head self-attention wherever the feature map is ``r x r`` for ``r`` in ``attention_resolutions``;
* the conditioning vector ``e = MLP(sinusoid(t)) + class_embedding(y)`` (MLP = Linear-SiLU-Linear to
  ``4 * base_channels``, as in DDPM) enters every residual block through a per-block linear map, either
  as a per-channel bias (DDPM) or as a scale-and-shift of the second normalisation,
  ``GroupNorm(h) * (1 + s) + b`` (ADM's ``use_scale_shift_norm``);
* the last conv of every residual block, the output projection of every attention block and the output
  conv are zero-initialised, so each residual branch starts as the identity and the network's initial
  prediction is exactly zero (Goyal et al. 2017; ADM's ``zero_module``). This makes early training stable.

Speed on CPU (the design target is training at batch 64 on two cores): there is no Python loop over the
batch, attention runs only at the listed (small) resolutions using
:func:`torch.nn.functional.scaled_dot_product_attention` on token-major tensors, the SiLU after each
GroupNorm runs in place, the conditioning MLP output is passed through SiLU once and shared by all
blocks, and every op preserves the ``torch.channels_last`` memory format, so a model and input converted
with ``.to(memory_format=torch.channels_last)`` run the oneDNN NHWC convolution kernels without reorders.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dreamdata.errors import ConfigError
from dreamdata.networks.embeddings import ClassEmbedding, conditioning_vector


class NetworkConfigError(ConfigError, ValueError):
    """A network hyper-parameter does not fit the data (e.g. an image size the U-Net cannot halve).

    Both a :class:`~dreamdata.errors.ConfigError` (so the CLI prints it without a traceback) and a
    :class:`ValueError` (the conventional type for a bad argument value).
    """


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of ``channels`` that is at most
    ``min(max_groups, channels // 4)`` (at least 1).

    Wu & He 2018 use 32 groups; with narrow layers that would leave one or two channels per group, so we
    keep at least four channels per group. Taking a divisor means the rule never fails (e.g. 48 -> 12,
    64 -> 16, 96 -> 24, 128 -> 32). The group count barely changes the cost of the op.
    """
    limit = max(1, min(max_groups, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels, eps=1e-5)


def zero_init(module: nn.Module) -> nn.Module:
    """Set a layer's weights and bias to zero (the branch it ends then starts as the identity)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    module.zero_initialised = True  # marker used by tests to find (and re-randomise) these layers
    return module


def dropout_(h: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (Srivastava et al. 2014) applied in place to ``h``.

    On CPU the keep-mask is drawn as uint8 integers in ``0..255`` instead of with ``bernoulli_``, which
    is several times slower there and was ~7 % of a CPU training step. This rounds ``p`` to a multiple
    of 1/256 (0.1 -> 26/256 = 0.1016); the survivors are scaled by ``1 / (1 - p_rounded)`` so the
    expectation is exact. Other devices use :func:`torch.nn.functional.dropout`.
    """
    if not training or p <= 0.0:
        return h
    if h.device.type != "cpu":
        return F.dropout(h, p, training=True, inplace=True)
    drop = round(p * 256)
    if drop == 0:
        return h
    dropped = torch.randint(0, 256, h.shape, dtype=torch.uint8, device=h.device) < drop
    return h.masked_fill_(dropped, 0.0).mul_(256.0 / (256 - drop))


class ResBlock(nn.Module):
    """Residual block: ``x + Conv(Drop(SiLU(Norm(Conv(SiLU(Norm(x))) (+) e))))`` with a 1x1 skip conv if
    the width changes. ``(+)`` is the conditioning injection: ``+ W e`` (bias) or, with
    ``scale_shift=True``, the second norm becomes ``Norm(h) * (1 + s) + b`` with ``[s, b] = W e``."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float,
                 scale_shift: bool):
        super().__init__()
        self.scale_shift = scale_shift
        self.dropout = dropout
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels * (2 if scale_shift else 1))
        self.norm2 = group_norm(out_channels)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # In-place ops only where autograd does not need the overwritten value: GroupNorm, conv and
        # linear layers save their inputs (not outputs) for backward, and dropout saves only its mask.
        # Fewer fresh multi-MB activations also means fewer page faults on CPU.
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        e = self.emb_proj(emb)[:, :, None, None].to(h.dtype)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), scale + 1.0)
        else:
            h = self.norm2(h.add_(e))
        h = dropout_(F.silu(h, inplace=True), self.dropout, self.training)
        return self.conv2(h).add_(self.skip(x))

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, scale_shift={self.scale_shift}"


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions (Vaswani et al. 2017; as in DDPM at 16x16
    and ADM at several resolutions): ``x + Proj(Attention(QKV(Norm(x))))``, heads of
    ``head_channels`` channels, computed by :func:`F.scaled_dot_product_attention`."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.num_heads = max(1, channels // head_channels)
        if channels % self.num_heads:
            raise NetworkConfigError(f"attention over {channels} channels cannot be split into "
                                     f"{self.num_heads} heads of {head_channels} channels")
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, height, width = x.shape
        heads = self.num_heads
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, height * width, c)  # free if channels_last
        q, k, v = self.qkv(tokens).view(b, height * width, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, c/heads]
        out = self.proj(out.transpose(1, 2).reshape(b, height * width, c))
        return out.view(b, height, width, c).permute(0, 3, 1, 2).add_(x)  # NHWC storage, NCHW view


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv (DDPM)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 conv (DDPM; avoids the
    checkerboard artefacts of transposed convs, Odena et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A sequence of blocks that all take ``(x, emb)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb)
        return x


class UNet(nn.Module):
    """Class-conditional U-Net denoiser; see the module docstring for the architecture.

    ``forward(x_t, t, class_labels=None)``: ``x_t`` ``[B, in_channels, image_size, image_size]``, ``t``
    ``[B]`` timestep indices (long or float), ``class_labels`` int64 ``[B]`` in ``0 .. num_classes``
    (``num_classes`` = the learned null class) or ``None`` (all null). With ``num_classes == 0`` the
    network is unconditional and labels are ignored. Returns a tensor shaped like ``x_t``, with
    ``out_channels`` channels (default ``in_channels``; ``2 * in_channels`` for a learned variance,
    Nichol & Dhariwal 2021, sec. 3.1).

    ``image_size`` must be divisible by ``2 ** (len(channel_mults) - 1)`` (one halving between levels).
    ``block`` is the residual block class (default :class:`ResBlock`; e.g.
    :class:`~dreamdata.networks.convnext.ConvNextBlock`), built as ``block(cin, cout, emb, dropout, scale_shift)``.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, base_channels: int = 64,
                 channel_mults: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (8,), attention_head_channels: int = 32,
                 dropout: float = 0.1, scale_shift: bool = False, mid_attention: bool = True,
                 block: Optional[type] = None, out_channels: Optional[int] = None):
        super().__init__()
        channel_mults = tuple(int(m) for m in channel_mults)
        if not channel_mults or min(channel_mults) < 1:
            raise NetworkConfigError(f"channel_mults must be a non-empty list of positive integers, "
                                     f"got {list(channel_mults)}")
        factor = 2 ** (len(channel_mults) - 1)
        if image_size < 1 or image_size % factor:
            raise NetworkConfigError(
                f"image_size {image_size} cannot be halved {len(channel_mults) - 1} times, as "
                f"channel_mults {list(channel_mults)} ({len(channel_mults)} levels) require: it must be "
                f"divisible by {factor}")
        if base_channels < 2 or base_channels % 2:
            raise NetworkConfigError(f"base_channels must be an even number >= 2, got {base_channels}")
        if num_res_blocks < 1:
            raise NetworkConfigError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        if num_classes < 0:
            raise NetworkConfigError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise NetworkConfigError(f"dropout must be in [0, 1), got {dropout}")

        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else int(out_channels)
        self.image_size = image_size
        self.num_classes = num_classes
        self.null_class = num_classes
        self.base_channels = base_channels
        self.channel_mults = channel_mults
        self.attention_resolutions = tuple(int(r) for r in attention_resolutions)

        emb_channels = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_channels), nn.SiLU(),
                                      nn.Linear(emb_channels, emb_channels))
        self.class_embedding = ClassEmbedding(num_classes, emb_channels) if num_classes > 0 else None

        block_type = ResBlock if block is None else block

        def res_block(cin: int, cout: int) -> nn.Module:
            return block_type(cin, cout, emb_channels, dropout, scale_shift)

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, attention_head_channels)

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        channels, resolution = base_channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                blocks: list[nn.Module] = [res_block(channels, base_channels * mult)]
                channels = base_channels * mult
                if resolution in self.attention_resolutions:
                    blocks.append(attention(channels))
                self.down.append(EmbedSequential(*blocks))
                skip_channels.append(channels)
            if level != len(channel_mults) - 1:
                self.down.append(EmbedSequential(Downsample(channels)))
                skip_channels.append(channels)
                resolution //= 2

        middle: list[nn.Module] = [res_block(channels, channels)]
        if mid_attention:
            middle.append(attention(channels))
        middle.append(res_block(channels, channels))
        self.middle = EmbedSequential(*middle)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for index in range(num_res_blocks + 1):
                blocks = [res_block(channels + skip_channels.pop(), base_channels * mult)]
                channels = base_channels * mult
                if resolution in self.attention_resolutions:
                    blocks.append(attention(channels))
                if level != 0 and index == num_res_blocks:
                    blocks.append(Upsample(channels))
                    resolution *= 2
                self.up.append(EmbedSequential(*blocks))
        assert not skip_channels and resolution == image_size

        self.norm_out = group_norm(channels)
        self.conv_out = zero_init(nn.Conv2d(channels, self.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = conditioning_vector(self.time_mlp, self.base_channels, self.class_embedding, t, class_labels,
                                  x.shape[0], x.device)
        emb = F.silu(emb)  # every block's projection starts with SiLU (DDPM's Dense(nonlinearity(temb)))

        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))
