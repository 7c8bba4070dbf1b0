"""Mini-batches addressed by global step, so a resumed run sees exactly the batches an uninterrupted one would.

There is no iterator state to save: batch ``step`` is a pure function of ``(seed, step)``. Epoch ``e``
shuffles the dataset with a CPU generator seeded from ``(seed, e)``; rank ``r`` of ``world_size``
takes every ``world_size``-th image of that order, trimmed so every rank has the same number of
steps; the incomplete last batch is dropped. The horizontal-flip decisions come from the same
per-epoch generator. The dataset lives on the training device as uint8, so a step is only an index,
a flip and a conversion to float in ``[-1, 1]``: no decoding, no host-to-device copy of pixels.
"""

from __future__ import annotations

from typing import Union

import torch

from dreamdata.data.image_data import ImageData
from dreamdata.errors import DataError

_EPOCH_STRIDE = 1_000_003  # a prime: seeds (seed, epoch) map to distinct generator seeds


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of ``epoch``'s shuffle and flips."""
    return (seed * _EPOCH_STRIDE + epoch) % (2**63)


class BatchStream:
    """Deterministic mini-batches of ``data`` on ``device``, addressed by global step."""

    def __init__(self, data: ImageData, batch_size: int, seed: int, hflip: bool,
                 device: Union[torch.device, str] = "cpu", rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise DataError(f"batch size must be a positive integer, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        self.num_images = len(data)
        self.per_rank = self.num_images // world_size
        self.steps_per_epoch = self.per_rank // batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"{data.source}: {self.num_images} training images are fewer than one batch of "
                            f"{batch_size} per process x {world_size} process(es) = {batch_size * world_size}; "
                            "lower train.batch_size or use more data")
        self.batch_size = batch_size
        self.seed = seed
        self.hflip = hflip
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.int64)  # this rank's dataset indices for self._epoch
        self._flips = torch.empty(0, dtype=torch.bool)

    def _prepare_epoch(self, epoch: int) -> None:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(self.num_images, generator=generator)
        flips = torch.rand(self.num_images, generator=generator) < 0.5
        mine = slice(self.rank, self.rank + self.world_size * self.per_rank, self.world_size)
        self._order = order[mine].to(self.device)
        self._flips = flips[mine].to(self.device)
        self._epoch = epoch

    def epoch_of(self, step: int) -> int:
        """The epoch that global ``step`` falls in."""
        return step // self.steps_per_epoch

    def batch_indices(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset indices of batch ``step`` on this rank and whether each image is flipped."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._prepare_epoch(epoch)
        window = slice(position * self.batch_size, (position + 1) * self.batch_size)
        flips = self._flips[window] if self.hflip else torch.zeros_like(self._flips[window])
        return self._order[window], flips

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images float32 ``[B, C, H, W]`` in ``[-1, 1]`` and labels int64 ``[B]``, on the device."""
        indices, flips = self.batch_indices(step)
        images = self.images[indices]
        if self.hflip:
            images = torch.where(flips[:, None, None, None], images.flip(-1), images)
        return images.to(torch.float32).div_(127.5).sub_(1.0), self.labels[indices]
