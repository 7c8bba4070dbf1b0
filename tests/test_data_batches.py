"""ImageData operations, validation split, pixel conversions and step-addressed BatchStream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dreamdata.data import BatchStream, ImageData, convert_channels, split_validation
from dreamdata.errors import DataError


def indexed_data(count: int = 40, num_classes: int = 4, size: int = 4) -> ImageData:
    """Image ``i`` is filled with value ``i`` (so a batch reveals which images it holds)."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, size, size)
    labels = torch.arange(count) % num_classes
    return ImageData(images.contiguous(), labels, [f"c{k}" for k in range(num_classes)], "test data")


def test_image_data_basics():
    data = indexed_data()
    assert len(data) == 40 and data.num_classes == 4 and data.channels == 1 and data.image_size == 4
    part = data.subset(torch.tensor([3, 1]))
    assert part.labels.tolist() == [3, 1] and part.images[:, 0, 0, 0].tolist() == [3, 1]
    wide = ImageData(torch.zeros(2, 1, 4, 6, dtype=torch.uint8), torch.zeros(2), ["a"], "wide")
    with pytest.raises(DataError, match=r"4x6, not square.*image_size"):
        wide.image_size


def test_split_validation_sizes_disjoint_stratified_deterministic():
    data = indexed_data(count=100)
    train, val = split_validation(data, 0.2, seed=7)
    assert len(train) == 80 and len(val) == 20
    train_ids = set(train.images[:, 0, 0, 0].tolist())
    val_ids = set(val.images[:, 0, 0, 0].tolist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 100
    assert val.class_counts().tolist() == [5, 5, 5, 5]
    _, val_again = split_validation(data, 0.2, seed=7)
    assert torch.equal(val.images, val_again.images)
    _, val_other = split_validation(data, 0.2, seed=8)
    assert not torch.equal(val.images, val_other.images)


def test_split_validation_zero_fraction_gives_empty_val():
    train, val = split_validation(indexed_data(), 0.0, seed=0)
    assert len(train) == 40 and len(val) == 0
    assert val.images.shape == (0, 1, 4, 4) and val.class_names == train.class_names


def test_rgb_to_gray_matches_pil():
    rgb = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 3, 6, 6), dtype=np.uint8))
    gray = convert_channels(rgb, 1)
    pil = [np.asarray(Image.fromarray(image.permute(1, 2, 0).numpy()).convert("L")) for image in rgb]
    assert torch.equal(gray[:, 0], torch.from_numpy(np.stack(pil)))
    assert torch.equal(convert_channels(gray, 3), gray.expand(-1, 3, -1, -1))


def test_batches_are_deterministic_and_normalised():
    data = indexed_data()
    first = BatchStream(data, batch_size=8, seed=3, hflip=True)
    second = BatchStream(data, batch_size=8, seed=3, hflip=True)
    assert first.steps_per_epoch == 5
    for step in (0, 4, 5, 17, 3):  # out of order and across epochs, like a resumed run
        images_a, labels_a = first.batch(step)
        images_b, labels_b = second.batch(step)
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
        assert images_a.shape == (8, 1, 4, 4) and images_a.dtype == torch.float32
        assert labels_a.dtype == torch.int64
        assert images_a.min() >= -1 and images_a.max() <= 1
        ids = torch.round((images_a[:, 0, 0, 0] + 1) * 127.5).long()
        assert torch.equal(labels_a, ids % 4)  # labels travel with their images
    epoch_orders = [torch.cat([first.batch_indices(e * 5 + i)[0] for i in range(5)]) for e in range(2)]
    assert sorted(epoch_orders[0].tolist()) == list(range(40))
    assert not torch.equal(epoch_orders[0], epoch_orders[1])


def test_ranks_split_each_epoch_disjointly():
    data = indexed_data(count=42)
    streams = [BatchStream(data, batch_size=5, seed=0, hflip=False, rank=r, world_size=2) for r in range(2)]
    assert all(stream.steps_per_epoch == 4 for stream in streams)  # 21 images per rank -> 4 full batches
    for epoch in range(2):
        seen = [torch.cat([s.batch_indices(epoch * 4 + i)[0] for i in range(4)]).tolist() for s in streams]
        assert not set(seen[0]) & set(seen[1]) and len(set(seen[0]) | set(seen[1])) == 40
    full = BatchStream(data, batch_size=21, seed=0, hflip=False, rank=1, world_size=2)
    assert full.steps_per_epoch == 1


def test_hflip_flips_about_half():
    images = torch.zeros(200, 1, 2, 2, dtype=torch.uint8)
    images[:, :, :, 0] = 255  # bright left column
    data = ImageData(images, torch.zeros(200), ["only"], "stripes")
    stream = BatchStream(data, batch_size=50, seed=1, hflip=True)
    flipped = sum(int((stream.batch(step)[0][:, 0, 0, 1] == 1).sum()) for step in range(4))
    assert 70 < flipped < 130
    unflipped = BatchStream(data, batch_size=50, seed=1, hflip=False)
    assert all((unflipped.batch(step)[0][:, 0, 0, 0] == 1).all() for step in range(4))


def test_too_few_images_for_one_batch():
    with pytest.raises(DataError, match=r"test data: 40 training images.*8 per process x 6"):
        BatchStream(indexed_data(), batch_size=8, seed=0, hflip=False, rank=0, world_size=6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_gpu_match_cpu():
    data = indexed_data()
    cpu = BatchStream(data, batch_size=8, seed=5, hflip=True)
    gpu = BatchStream(data, batch_size=8, seed=5, hflip=True, device="cuda")
    assert gpu.images.is_cuda
    for step in (0, 7):
        images, labels = gpu.batch(step)
        assert images.is_cuda and torch.equal(images.cpu(), cpu.batch(step)[0])
        assert torch.equal(labels.cpu(), cpu.batch(step)[1])
