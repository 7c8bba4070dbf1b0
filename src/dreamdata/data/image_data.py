"""The in-memory dataset every loader produces, and the label-aware ways of cutting it down.

A dataset is decoded once into a single uint8 tensor ``[N, C, H, W]`` plus int64 labels; everything
downstream (validation split, batching, class selection) is plain tensor indexing on that, so no
image is ever decoded twice and no data-loader workers are needed. The selection helpers here are
all deterministic given their seed, because which images a run trained on must be reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from dreamdata.errors import DataError


@dataclass
class ImageData:
    """Decoded images with integer labels and the names of their classes.

    ``images`` is uint8 ``[N, C, H, W]`` (contiguous), ``labels`` int64 ``[N]`` with values in
    ``0 .. len(class_names) - 1``, and ``source`` a human-readable description such as
    ``"fashion-mnist (train)"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageData.images must be uint8 [N, C, H, W], got {self.images.dtype} "
                             f"{list(self.images.shape)}")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"ImageData.labels must be [N] with N={self.images.shape[0]}, "
                             f"got {list(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64).contiguous()
        self.class_names = [str(name) for name in self.class_names]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def height(self) -> int:
        return int(self.images.shape[2])

    @property
    def width(self) -> int:
        return int(self.images.shape[3])

    @property
    def image_size(self) -> int:
        """Side of the (square) images; non-square images have no single size."""
        if self.height != self.width:
            raise DataError(f"{self.source}: images are {self.height}x{self.width}, not square; "
                            "set data.image_size to resize them to a square size")
        return self.height

    def class_counts(self) -> torch.Tensor:
        """Number of images of each class, int64 ``[num_classes]``."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)

    def subset(self, indices: torch.Tensor) -> "ImageData":
        """The images at ``indices`` (a long index tensor or a bool mask), same classes and source."""
        indices = torch.as_tensor(indices)
        if indices.dtype != torch.bool:
            indices = indices.to(torch.int64)
        return ImageData(self.images[indices], self.labels[indices], list(self.class_names), self.source)


def select_classes(data: ImageData, classes: Sequence[Union[int, str]]) -> ImageData:
    """Keep only ``classes`` (names or indices) and re-index labels ``0..k-1`` in the order given."""
    if len(classes) == 0:
        raise DataError("data.classes is an empty list; give at least one class name or index, or null for all")
    chosen: list[int] = []
    for item in classes:
        if isinstance(item, bool):
            raise DataError(f"data.classes: {item!r} is neither a class name nor an index")
        if isinstance(item, int):
            if not 0 <= item < data.num_classes:
                raise DataError(f"data.classes: class index {item} is out of range; {data.source} has "
                                f"{data.num_classes} classes (indices 0..{data.num_classes - 1})")
            index = item
        elif isinstance(item, str):
            if item not in data.class_names:
                raise DataError(f"data.classes: unknown class name {item!r}; {data.source} has classes: "
                                f"{', '.join(repr(name) for name in data.class_names)}")
            index = data.class_names.index(item)
        else:
            raise DataError(f"data.classes: {item!r} is neither a class name nor an index")
        if index in chosen:
            raise DataError(f"data.classes: class {item!r} ({data.class_names[index]!r}) is listed twice")
        chosen.append(index)

    new_label = torch.full((data.num_classes,), -1, dtype=torch.int64)
    new_label[torch.tensor(chosen)] = torch.arange(len(chosen))
    remapped = new_label[data.labels.cpu()]
    keep = remapped >= 0
    names = [data.class_names[index] for index in chosen]
    return ImageData(data.images[keep], remapped[keep], names, data.source)


def per_class_indices(data: ImageData, per_class: int, seed: int) -> torch.Tensor:
    """The sorted indices of at most ``per_class`` images of each class: the first ones after a seeded shuffle
    (what :func:`cap_per_class` keeps; the rest is what a study can hold out)."""
    if per_class < 1:
        raise DataError(f"data.per_class: expected a positive integer, got {per_class}")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    shuffled_labels = data.labels.cpu()[order]
    kept = [order[shuffled_labels == label][:per_class] for label in range(data.num_classes)]
    return torch.sort(torch.cat(kept)).values if kept else torch.zeros(0, dtype=torch.int64)


def cap_per_class(data: ImageData, per_class: int, seed: int) -> ImageData:
    """Keep at most ``per_class`` images of each class: the first ones after a seeded shuffle.

    The kept images stay in their original order. The same data and seed always keep the same images.
    """
    return data.subset(per_class_indices(data, per_class, seed))


def split_validation(data: ImageData, fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Hold out ``fraction`` of the images for validation: ``(train, val)``, stratified by class.

    The held-out count is ``round(fraction * N)`` (at least one image when ``fraction > 0`` and at
    least one left for training). Within that total each class contributes in proportion to its
    size, so a rare class is not left out of validation by chance. Deterministic given ``seed``;
    ``fraction == 0`` gives an empty validation set.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"data.val_fraction: expected 0 <= fraction < 1, got {fraction}")
    total = len(data)
    num_val = round(fraction * total)
    if fraction > 0 and total >= 2:
        num_val = min(max(num_val, 1), total - 1)
    elif total < 2:
        num_val = 0
    empty = torch.zeros(0, dtype=torch.int64)
    if num_val == 0:
        return data.subset(torch.arange(total)), data.subset(empty)

    # Rank each image within its class in a seeded shuffle; rank / class size spreads every class
    # evenly over [0, 1), so taking the smallest keys takes the same fraction of every class.
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    shuffled_labels = data.labels.cpu()[order]
    keys = torch.empty(total, dtype=torch.float64)
    for label in torch.unique(shuffled_labels).tolist():
        positions = (shuffled_labels == label).nonzero().squeeze(1)
        keys[positions] = (torch.arange(len(positions), dtype=torch.float64) + 0.5) / len(positions)
    chosen = torch.sort(keys, stable=True).indices[:num_val]
    is_val = torch.zeros(total, dtype=torch.bool)
    is_val[order[chosen]] = True
    return data.subset(~is_val), data.subset(is_val)
