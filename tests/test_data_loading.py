"""Loading datasets from specs: folders, zips, npz, IDX files; selection, conversion and bad input."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dreamdata.data.decode
from dreamdata.config import DataConfig
from dreamdata.data import load_dataset, read_idx, resize_images
from dreamdata.errors import DataError

CLASSES = ("cat", "dog", "emu")
PER_CLASS = 3
SIZE = 8


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_folder(root: Path, seed: int = 0, mode: str = "RGB", classes=CLASSES) -> dict[str, list[np.ndarray]]:
    """``root/<class>/<i>.png`` with random pixels; returns the pixels written, per class, in file order."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for name in classes:
        for index in range(PER_CLASS):
            shape = (SIZE, SIZE, 3) if mode == "RGB" else (SIZE, SIZE)
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            write_png(root / name / f"{index}.png", pixels)
            written.setdefault(name, []).append(pixels)
    return written


def zip_folder(folder: Path, archive: Path, inside: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            handle.write(path, inside + path.relative_to(folder).as_posix())
    return archive


def config(tmp_path: Path, dataset: str, **options) -> DataConfig:
    return DataConfig(dataset=dataset, data_root=str(tmp_path / "root"), **options)


def expected_chw(written: dict[str, list[np.ndarray]]) -> torch.Tensor:
    arrays = [pixels for name in sorted(written) for pixels in written[name]]
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.unsqueeze(1) if stacked.dim() == 3 else stacked.permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------
# Folders


def test_folder_round_trip(tmp_path):
    written = make_folder(tmp_path / "imgs")
    data = load_dataset(config(tmp_path, f"folder:{tmp_path / 'imgs'}"))
    assert data.class_names == list(CLASSES)
    assert data.images.shape == (9, 3, SIZE, SIZE) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(data.images, expected_chw(written))
    assert data.image_size == SIZE and data.channels == 3 and data.num_classes == 3 and len(data) == 9
    assert str(tmp_path / "imgs") in data.source


def test_extensions_are_case_insensitive_and_other_files_ignored(tmp_path):
    written = make_folder(tmp_path / "imgs", classes=("cat",))
    extra = np.full((SIZE, SIZE, 3), 7, np.uint8)
    write_png(tmp_path / "imgs" / "cat" / "9.PNG", extra)
    (tmp_path / "imgs" / "cat" / "labels.csv").write_text("not an image")
    (tmp_path / "imgs" / "cat" / ".hidden.png").write_bytes(b"not an image either")
    data = load_dataset(config(tmp_path, f"folder:{tmp_path / 'imgs'}"))
    assert len(data) == PER_CLASS + 1
    assert torch.equal(data.images, expected_chw({"cat": written["cat"] + [extra]}))


def test_folder_with_train_and_test_splits(tmp_path):
    make_folder(tmp_path / "d" / "train", seed=1)
    written_test = make_folder(tmp_path / "d" / "test", seed=2, classes=("cat", "dog"))
    test = load_dataset(config(tmp_path, f"folder:{tmp_path / 'd'}"), "test")
    assert test.class_names == ["cat", "dog"] and torch.equal(test.images, expected_chw(written_test))
    assert len(load_dataset(config(tmp_path, f"folder:{tmp_path / 'd'}"), "train")) == 9


def test_folder_without_test_subfolder_has_no_test_split(tmp_path):
    make_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match="no test/ sub-folder"):
        load_dataset(config(tmp_path, f"folder:{tmp_path / 'imgs'}"), "test")


def test_grayscale_folder_and_channel_conversion(tmp_path):
    written = make_folder(tmp_path / "gray", mode="L")
    spec = f"folder:{tmp_path / 'gray'}"
    gray = load_dataset(config(tmp_path, spec))
    assert gray.channels == 1 and torch.equal(gray.images, expected_chw(written))
    rgb = load_dataset(config(tmp_path, spec, channels=3))
    assert rgb.channels == 3 and all(torch.equal(rgb.images[:, c], gray.images[:, 0]) for c in range(3))


def test_rgb_to_grayscale_matches_pil_luma(tmp_path):
    written = make_folder(tmp_path / "rgb")
    data = load_dataset(config(tmp_path, f"folder:{tmp_path / 'rgb'}", channels=1))
    pil_gray = [np.asarray(Image.fromarray(p).convert("L")) for name in sorted(written) for p in written[name]]
    assert data.channels == 1 and torch.equal(data.images[:, 0], torch.from_numpy(np.stack(pil_gray)))


def test_resize_to_image_size_matches_pil_bilinear(tmp_path):
    """The resize is antialiased bilinear: PIL's ``Image.resize(BILINEAR)`` is the independent reference
    (bit-identical for an integer factor, within one grey level otherwise)."""
    written = make_folder(tmp_path / "imgs")
    spec = f"folder:{tmp_path / 'imgs'}"
    small = load_dataset(config(tmp_path, spec, image_size=4))
    assert small.images.shape == (9, 3, 4, 4) and small.image_size == 4
    arrays = [pixels for name in sorted(written) for pixels in written[name]]

    def pil_resized(size):
        return torch.from_numpy(np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR))
                                          for p in arrays])).permute(0, 3, 1, 2)

    assert torch.equal(small.images, pil_resized(4))
    odd = load_dataset(config(tmp_path, spec, image_size=5)).images
    assert (odd.int() - pil_resized(5).int()).abs().max() <= 1
    native = load_dataset(config(tmp_path, spec)).images
    assert torch.equal(resize_images(native, 8), native)  # already the size: untouched


def test_mixed_sizes_need_image_size(tmp_path):
    make_folder(tmp_path / "imgs")
    write_png(tmp_path / "imgs" / "dog" / "big.png", np.zeros((12, 10, 3), np.uint8))
    spec = f"folder:{tmp_path / 'imgs'}"
    with pytest.raises(DataError, match=r"(?s)different sizes.*cat.0\.png.*8x8.*big\.png.*12x10.*image_size"):
        load_dataset(config(tmp_path, spec))
    data = load_dataset(config(tmp_path, spec, image_size=6))
    assert data.images.shape == (10, 3, 6, 6)


def test_mixed_modes_need_channels(tmp_path):
    make_folder(tmp_path / "imgs")
    write_png(tmp_path / "imgs" / "emu" / "gray.png", np.zeros((SIZE, SIZE), np.uint8))
    spec = f"folder:{tmp_path / 'imgs'}"
    with pytest.raises(DataError, match=r"(?s)channel.*cat.0\.png.*gray\.png.*data\.channels"):
        load_dataset(config(tmp_path, spec))
    assert load_dataset(config(tmp_path, spec, channels=1)).images.shape == (10, 1, SIZE, SIZE)


def test_corrupt_image_fails_or_is_skipped(tmp_path):
    make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "dog" / "x.png").write_bytes(b"this is not a png")
    spec = f"folder:{tmp_path / 'imgs'}"
    with pytest.raises(DataError, match=r"x\.png.*skip_corrupt"):
        load_dataset(config(tmp_path, spec))
    with pytest.warns(UserWarning, match=r"skipped 1 .*x\.png"):
        data = load_dataset(config(tmp_path, spec, skip_corrupt=True))
    assert len(data) == 9


def test_folder_problems_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*no class sub-folders"):
        load_dataset(config(tmp_path, f"folder:{tmp_path / 'empty'}"))
    make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "fox").mkdir()
    (tmp_path / "imgs" / "fox" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"imgs/fox.*no images"):
        load_dataset(config(tmp_path, f"folder:{tmp_path / 'imgs'}"))
    with pytest.raises(DataError, match=r"nowhere.*no such directory"):
        load_dataset(config(tmp_path, f"folder:{tmp_path / 'nowhere'}"))
    with pytest.raises(DataError, match=r"notes\.txt.*not a directory"):
        load_dataset(config(tmp_path, f"folder:{tmp_path / 'imgs' / 'fox' / 'notes.txt'}"))


# ---------------------------------------------------------------------------------------------------
# Zips


def test_zip_matches_folder_and_descends_into_single_top_folder(tmp_path):
    written = make_folder(tmp_path / "imgs")
    archive = zip_folder(tmp_path / "imgs", tmp_path / "a.zip", inside="everything/")
    data = load_dataset(config(tmp_path, f"zip:{archive}"))
    assert data.class_names == list(CLASSES) and data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(data.images, expected_chw(written))


def test_zip_splits(tmp_path):
    make_folder(tmp_path / "d" / "train", seed=1)
    written_test = make_folder(tmp_path / "d" / "test", seed=2)
    both = zip_folder(tmp_path / "d", tmp_path / "both.zip")
    assert torch.equal(load_dataset(config(tmp_path, f"zip:{both}"), "test").images, expected_chw(written_test))
    train_only = zip_folder(tmp_path / "d" / "train", tmp_path / "train.zip", inside="train/")
    assert len(load_dataset(config(tmp_path, f"zip:{train_only}"), "train")) == 9
    with pytest.raises(DataError, match=r"train\.zip.*no test/"):
        load_dataset(config(tmp_path, f"zip:{train_only}"), "test")


def test_zip_decode_is_cached(tmp_path, monkeypatch):
    make_folder(tmp_path / "imgs")
    archive = zip_folder(tmp_path / "imgs", tmp_path / "a.zip")
    first = load_dataset(config(tmp_path, f"zip:{archive}"))
    assert len(list((tmp_path / "root" / "cache").glob("*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(dreamdata.data.decode, "decode_image", no_decoding)
    second = load_dataset(config(tmp_path, f"zip:{archive}"))
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.class_names == first.class_names


def test_zip_problems_name_the_path(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"fake\.zip.*not a zip"):
        load_dataset(config(tmp_path, f"zip:{tmp_path / 'fake.zip'}"))
    with pytest.raises(DataError, match=r"missing\.zip.*no such file"):
        load_dataset(config(tmp_path, f"zip:{tmp_path / 'missing.zip'}"))
    make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "dog" / "x.png").write_bytes(b"garbage")
    archive = zip_folder(tmp_path / "imgs", tmp_path / "a.zip")
    with pytest.raises(DataError, match=r"a\.zip:dog/x\.png"):
        load_dataset(config(tmp_path, f"zip:{archive}"))


# ---------------------------------------------------------------------------------------------------
# npz


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, SIZE, SIZE, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 2, 0, 1, 2]),
             class_names=np.array(["a", "b", "c"]))
    data = load_dataset(config(tmp_path, f"npz:{tmp_path / 'd.npz'}"))
    assert data.class_names == ["a", "b", "c"] and data.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(data.images, torch.from_numpy(images).permute(0, 3, 1, 2))

    np.savez(tmp_path / "gray.npz", images=images[..., 0], labels=np.array([0, 0, 2, 2, 1, 1]))
    gray = load_dataset(config(tmp_path, f"npz:{tmp_path / 'gray.npz'}"))
    assert gray.images.shape == (6, 1, SIZE, SIZE) and gray.class_names == ["0", "1", "2"]


def test_npz_problems(tmp_path):
    images = np.zeros((4, SIZE, SIZE), np.uint8)
    np.savez(tmp_path / "keys.npz", pictures=images, labels=np.zeros(4, int))
    with pytest.raises(DataError, match=r"keys\.npz.*missing key\(s\) images.*found keys \['labels', 'pictures'\]"):
        load_dataset(config(tmp_path, f"npz:{tmp_path / 'keys.npz'}"))
    np.savez(tmp_path / "float.npz", images=images.astype(np.float32), labels=np.zeros(4, int))
    with pytest.raises(DataError, match=r"float\.npz.*uint8.*float32"):
        load_dataset(config(tmp_path, f"npz:{tmp_path / 'float.npz'}"))
    np.savez(tmp_path / "short.npz", images=images, labels=np.zeros(3, int))
    with pytest.raises(DataError, match=r"short\.npz.*labels.*\[4\]"):
        load_dataset(config(tmp_path, f"npz:{tmp_path / 'short.npz'}"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"junk\.npz: not an npz file"):
        load_dataset(config(tmp_path, f"npz:{tmp_path / 'junk.npz'}"))
    with pytest.raises(DataError, match=r"absent\.npz.*no such file"):
        load_dataset(config(tmp_path, f"npz:{tmp_path / 'absent.npz'}"))


# ---------------------------------------------------------------------------------------------------
# Specs, class selection, per-class cap


def test_unknown_spec_lists_valid_forms(tmp_path):
    with pytest.raises(DataError, match=r"'imagenet'.*mnist, fashion-mnist, cifar10, cifar100, folder:PATH"):
        load_dataset(config(tmp_path, "imagenet"))
    with pytest.raises(DataError, match=r"split 'val'"):
        load_dataset(config(tmp_path, "mnist"), "val")


def test_class_subset_by_name_and_index(tmp_path):
    make_folder(tmp_path / "imgs")
    spec = f"folder:{tmp_path / 'imgs'}"
    full = load_dataset(config(tmp_path, spec))
    by_name = load_dataset(config(tmp_path, spec, classes=["emu", "cat"]))
    assert by_name.class_names == ["emu", "cat"] and by_name.labels.tolist() == [1, 1, 1, 0, 0, 0]
    assert torch.equal(by_name.images, torch.cat([full.images[:3], full.images[6:]]))
    by_index = load_dataset(config(tmp_path, spec, classes=[2, 0]))
    assert by_index.class_names == ["emu", "cat"] and torch.equal(by_index.labels, by_name.labels)
    with pytest.raises(DataError, match=r"'yak'.*'cat', 'dog', 'emu'"):
        load_dataset(config(tmp_path, spec, classes=["yak"]))
    with pytest.raises(DataError, match=r"index 3 is out of range"):
        load_dataset(config(tmp_path, spec, classes=[3]))


def test_per_class_cap_is_deterministic(tmp_path):
    labels = np.repeat(np.arange(3), 20)
    images = np.arange(60, dtype=np.uint8).reshape(60, 1, 1) * np.ones((1, 2, 2), np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    spec = f"npz:{tmp_path / 'd.npz'}"
    capped = load_dataset(config(tmp_path, spec, per_class=5, split_seed=3))
    assert capped.class_counts().tolist() == [5, 5, 5]
    again = load_dataset(config(tmp_path, spec, per_class=5, split_seed=3))
    assert torch.equal(capped.images, again.images)
    other = load_dataset(config(tmp_path, spec, per_class=5, split_seed=4))
    assert not torch.equal(capped.images, other.images)
    assert load_dataset(config(tmp_path, spec, per_class=50)).class_counts().tolist() == [20, 20, 20]


# ---------------------------------------------------------------------------------------------------
# IDX files (Fashion-MNIST / MNIST)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def make_fake_fashion(directory: Path, compress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, count in (("train", 12), ("t10k", 4)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_dir(tmp_path, monkeypatch, compress):
    arrays = make_fake_fashion(tmp_path / "fm", compress)
    monkeypatch.setenv("DREAMDATA_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = load_dataset(config(tmp_path, "fashion-mnist"), split)
        assert data.images.shape == (len(arrays[prefix][0]), 1, 28, 28)
        assert torch.equal(data.images[:, 0], torch.from_numpy(arrays[prefix][0]))
        assert data.labels.tolist() == arrays[prefix][1].tolist()
        assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
        assert data.source == f"fashion-mnist ({split})"


def test_idx_reader_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match=r"bad-magic.*bad magic"):
        read_idx(bad_magic)
    truncated = tmp_path / "truncated.gz"
    write_idx(truncated, np.zeros((4, 5, 5), np.uint8), compress=False)
    truncated.write_bytes(gzip.compress(truncated.read_bytes()[:-10]))
    with pytest.raises(DataError, match=r"truncated\.gz.*truncated IDX"):
        read_idx(truncated)
    broken_gzip = tmp_path / "broken.gz"
    broken_gzip.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(8))[:-6])
    with pytest.raises(DataError, match=r"broken\.gz"):
        read_idx(broken_gzip)


def test_fashion_mnist_without_files_or_network_explains_how_to_get_it(tmp_path, monkeypatch):
    import torchvision.datasets

    class NoNetwork:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", NoNetwork)
    monkeypatch.setenv("DREAMDATA_FASHION_MNIST_DIR", str(tmp_path / "nothing-here"))
    with pytest.warns(UserWarning, match="nothing-here"):
        with pytest.raises(DataError, match=r"(?s)fashion-mnist.*nothing-here.*apt-get install dataset-fashion-mnist"
                                            r".*DREAMDATA_FASHION_MNIST_DIR"):
            load_dataset(config(tmp_path, "fashion-mnist"))


def test_mnist_idx_files_in_data_root(tmp_path):
    raw = tmp_path / "root" / "MNIST" / "raw"
    arrays = make_fake_fashion(raw)
    data = load_dataset(config(tmp_path, "mnist"), "test")
    assert torch.equal(data.images[:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert data.class_names[0] == "0 - zero" and data.source == "mnist (test)"


def test_torchvision_dataset_arrays_are_converted(tmp_path, monkeypatch):
    import torchvision.datasets

    class FakeCifar:  # stands in for torchvision's CIFAR10 after a successful download
        classes = ["plane", "car"]

        def __init__(self, root, train, download):
            if not download:
                raise RuntimeError("Dataset not found")
            self.data = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
            self.targets = [1, 0]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCifar)
    data = load_dataset(config(tmp_path, "cifar10", classes=["car"]))
    assert data.class_names == ["car"] and data.labels.tolist() == [0]
    assert torch.equal(data.images[0], torch.from_numpy(FakeCifar(None, True, True).data[0]).permute(2, 0, 1))


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv("DREAMDATA_FASHION_MNIST_DIR", raising=False)
    train = load_dataset(config(tmp_path, "fashion-mnist"), "train")
    test = load_dataset(config(tmp_path, "fashion-mnist"), "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts().tolist() == [6000] * 10 and train.num_classes == 10


def test_pad_to_adds_black_border_without_scaling(tmp_path):
    import numpy as np

    from dreamdata.config import DataConfig
    from dreamdata.data import load_dataset
    from dreamdata.errors import DataError

    images = np.full((4, 6, 6, 1), 200, dtype=np.uint8)
    path = tmp_path / "p.npz"
    np.savez(path, images=images, labels=np.array([0, 1, 0, 1]))
    data = load_dataset(DataConfig(dataset=f"npz:{path}", pad_to=10))
    assert data.images.shape == (4, 1, 10, 10)
    assert (data.images[:, :, 2:8, 2:8] == 200).all()
    assert data.images.sum() == 4 * 36 * 200  # the border is zero
    with pytest.raises(DataError, match="pad_to=4"):
        load_dataset(DataConfig(dataset=f"npz:{path}", pad_to=4))


# ---------------------------------------------------------------------------------------------------
# Horizontal flips: a dataset-dependent default


def test_hflip_default_depends_on_the_dataset():
    """Flipping keeps the label of clothes and photographs, not of digits; for the user's own files
    dreamdata cannot know, so it does not flip unless asked."""
    from dreamdata.config import load_config
    from dreamdata.data import default_hflip, resolve_hflip

    expected = {"mnist": False, "fashion-mnist": True, "Fashion_MNIST": True, "cifar10": True, "cifar100": True,
                "npz:/data/x.npz": False, "folder:/data/x": False, "zip:/data/x.zip": False}
    assert {spec: default_hflip(spec) for spec in expected} == expected
    for spec in expected:  # an explicit choice always wins
        assert resolve_hflip(True, spec) is True and resolve_hflip(False, spec) is False
    assert DataConfig().hflip is None  # null = "the dataset's default"
    for preset in ("tiny", "demo", "fashion-mnist", "cifar10"):  # no preset forces flips on other data
        assert load_config(preset).data.hflip is None, preset
    assert load_config("tiny", ["data.hflip=false"]).data.hflip is False
    assert load_config("tiny", ["data.hflip=true"]).data.hflip is True
    with pytest.raises(DataError, match="unknown dataset"):
        default_hflip("imagenet")


def test_training_flips_only_where_the_dataset_default_or_the_config_says(tmp_path, tiny_npz, capsys):
    from dreamdata.config import load_config
    from dreamdata.training.trainer import Trainer

    common = [f"data.dataset=npz:{tiny_npz}", f"runs_dir={tmp_path / 'runs'}", "data.per_class=null"]
    assert Trainer(load_config("tiny", common)).stream.hflip is False  # npz: off by default
    assert Trainer(load_config("tiny", [*common, "data.hflip=true"])).stream.hflip is True
    preset = load_config("fashion-mnist", [*common, "train.batch_size=8"])
    assert Trainer(preset).stream.hflip is False  # the fashion-mnist preset flips fashion-mnist, not other data
    from dreamdata.training.trainer import train

    train(load_config("tiny", [*common, "train.steps=1", "train.sample_grid=false", "train.progress=false"]))
    assert "horizontal flips off (the default for npz: data)" in capsys.readouterr().out
