"""One CIFAR-10 zip with both splits, from the two image-folder zips (``train/<class>/...`` and
``test/<class>/...``) that an offline machine holds, e.g. ../shared/data/cifar10-{train,test}-jpeg.zip.

A sweep scores against the test split (``evaluation.ref_split``), so ``data.dataset=zip:PATH`` needs a zip
holding both; the train zip alone has no test split.

    python benchmarks/cifar10_zip.py ../shared/data/cifar10-train-jpeg.zip ../shared/data/cifar10-test-jpeg.zip \
        data/cifar10.zip

``--classes airplane automobile ... --per-class 500`` writes only the images that such a data selection keeps
(its seeded pick of the train split, and every test image of those classes) and then checks that dreamdata
decodes the same tensors, in the same order, from the small zip as from the full one: how the GPU runs of
guidance-and-epochs.yaml and schedules-and-steps-cifar.yaml carried their data within a transfer limit.
"""
from __future__ import annotations

import argparse
import tempfile
import zipfile
from pathlib import Path

import torch

from dreamdata.config import DataConfig
from dreamdata.data import ImageData, cap_per_class, load_dataset, select_classes
from dreamdata.data.image_files import zip_listing


def picked_members(archive: Path, split: str, classes: list[str], per_class: int, seed: int) -> list[str]:
    """Names of the members ``select_classes`` then ``cap_per_class`` keep, in the loader's order: the selection
    runs on each image's index, carried as three uint8 "pixels"."""
    with zipfile.ZipFile(archive) as handle:
        names, pairs = zip_listing(archive, handle, split)
    n = torch.arange(len(pairs))
    index = torch.stack([n % 256, n // 256 % 256, n // 65536], 1).to(torch.uint8).view(-1, 3, 1, 1)
    data = select_classes(ImageData(index, torch.tensor([label for _, label in pairs]), names, ""), classes)
    data = cap_per_class(data, per_class, seed)
    kept = data.images.view(-1, 3).long()
    return [pairs[i][0].filename for i in (kept[:, 0] + 256 * kept[:, 1] + 65536 * kept[:, 2]).tolist()]


def member_files(archive: Path) -> list[str]:
    """Every file (not folder) entry of ``archive``."""
    with zipfile.ZipFile(archive) as handle:
        return [info.filename for info in handle.infolist() if not info.is_dir()]


def write_zip(path: Path, members: list[tuple[Path, list[str]]]) -> None:
    """``path`` holding the named members of each source zip (JPEGs: stored, not compressed again)."""
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
        for source, names in members:
            with zipfile.ZipFile(source) as handle:
                for name in names:
                    out.writestr(name, handle.read(name))
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_zip", type=Path)
    parser.add_argument("test_zip", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", nargs="+", help="keep only what this data.classes selection reads")
    parser.add_argument("--per-class", type=int, default=None, help="the selection's data.per_class")
    parser.add_argument("--split-seed", type=int, default=0, help="the selection's data.split_seed")
    args = parser.parse_args()
    everything = [(source, member_files(source)) for source in (args.train_zip, args.test_zip)]
    if not args.classes:
        write_zip(args.out, everything)
        print(f"wrote {args.out}")
        return
    per_class = args.per_class or 10 ** 9
    train = picked_members(args.train_zip, "train", args.classes, per_class, args.split_seed)
    test = picked_members(args.test_zip, "test", args.classes, 10 ** 9, args.split_seed)
    write_zip(args.out, [(args.train_zip, train), (args.test_zip, test)])
    with tempfile.TemporaryDirectory() as scratch:
        full = Path(scratch) / "full.zip"
        write_zip(full, everything)
        for split in ("train", "test"):
            small, large = (load_dataset(DataConfig(dataset=f"zip:{path}", classes=args.classes,
                                                    per_class=args.per_class, split_seed=args.split_seed,
                                                    data_root=scratch), split) for path in (args.out, full))
            same = (torch.equal(small.images, large.images) and torch.equal(small.labels, large.labels)
                    and small.class_names == large.class_names)
            if not same:
                raise SystemExit(f"{args.out}: the {split} split differs from the full archives' selection")
            print(f"{split}: {len(small)} images, identical to the full archives' selection")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
