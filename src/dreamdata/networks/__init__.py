"""Denoising networks ``network(x_t, t, class_labels=None) -> prediction`` shaped like ``x_t`` (with
``out_channels`` channels: ``2 C`` when the network also outputs a learned variance).

* :class:`~dreamdata.networks.unet.UNet` - the DDPM / ADM U-Net (the default).
* the same U-Net with ConvNeXt blocks (:class:`~dreamdata.networks.convnext.ConvNextBlock`,
  ``model.network: convnext_unet``) - the cold-diffusion report's restorer;
* :class:`~dreamdata.networks.small_cnn.SmallCNN` - a five-layer CNN baseline.

Every network exposes ``in_channels``, ``image_size``, ``num_classes`` and ``null_class``
(``== num_classes``: the label index of the learned "no class" embedding used for classifier-free
guidance; ``class_labels=None`` means every example is the null class). With ``num_classes == 0`` the
network is unconditional and ignores labels.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from dreamdata.config import ModelConfig
from dreamdata.errors import ConfigError
from dreamdata.networks.convnext import ConvNextBlock
from dreamdata.networks.embeddings import ClassEmbedding, SinusoidalEmbedding, timestep_embedding
from dreamdata.networks.small_cnn import SmallCNN
from dreamdata.networks.unet import NetworkConfigError, UNet

__all__ = ["build_network", "count_parameters", "describe_network", "UNet", "SmallCNN", "ConvNextBlock",
           "ClassEmbedding", "SinusoidalEmbedding", "timestep_embedding", "NetworkConfigError"]


def build_network(config: ModelConfig, in_channels: int, image_size: int, num_classes: int,
                  out_channels: Optional[int] = None) -> nn.Module:
    """Build the network named by ``config.network`` for images ``[in_channels, image_size, image_size]``,
    with ``out_channels`` output channels (default ``in_channels``).

    ``num_classes`` is the dataset's class count; it is forced to 0 (unconditional) when
    ``config.class_conditional`` is False. Raises :class:`NetworkConfigError` (a ConfigError and a
    ValueError) when the hyper-parameters do not fit the data.
    """
    classes = num_classes if config.class_conditional else 0
    if config.network in ("unet", "convnext_unet"):
        return UNet(in_channels, image_size, classes, base_channels=config.base_channels,
                    channel_mults=tuple(config.channel_mults), num_res_blocks=config.num_res_blocks,
                    attention_resolutions=tuple(config.attention_resolutions),
                    attention_head_channels=config.attention_head_channels, dropout=config.dropout,
                    block=ConvNextBlock if config.network == "convnext_unet" else None, out_channels=out_channels)
    if config.network == "small_cnn":
        return SmallCNN(in_channels, image_size, classes, out_channels=out_channels)
    raise ConfigError(f"config key model.network: {config.network!r} is not one of unet, convnext_unet, small_cnn")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def describe_network(module: nn.Module) -> str:
    """One line naming the network and its size, e.g. ``"UNet: 3,912,321 parameters"`` (for a GAN, both
    of its networks)."""
    if hasattr(module, "generator") and hasattr(module, "discriminator"):
        return f"{describe_network(module.generator)}; {describe_network(module.discriminator)}"
    return f"{type(module).__name__}: {count_parameters(module):,} parameters"
