"""Real-data FID floor (train vs test), agreement with shared/bench/fidlib.py, extraction speed — issue #4.

Seeded N-image subsets of the train and test splits, prepared as the models see them (Fashion-MNIST
zero-padded 28 -> 32 like the bench; the CIFAR-10 JPEG copy at 32x32 RGB), Inception features through
dreamdata's protocol (cached by content hash, in pieces so that the 2k figures are kept before the 10k
ones are started), FID and KID at each N.

Stages (run in this order, each skipped when its output is already in --out):
  fmnist-2k      Fashion-MNIST train[0:2k] vs test[0:2k]
  fidlib         fidlib.py end to end on the same 2k train images against its cached 10k test reference,
                 and dreamdata on the same images: dreamdata's test features for [0:2k] are compared
                 element-wise with fidlib's, and (with --reuse-fidlib-test) fidlib's features of test[2k:10k]
                 stand in for dreamdata's once [0:2k] matched bit for bit
  cifar10-2k     CIFAR-10 train[0:2k] vs test[0:2k]
  fmnist-10k     Fashion-MNIST train[0:10k] vs test[0:10k]
  cifar10-10k    CIFAR-10 train[0:10k] vs test[0:10k]

    DREAMDATA_FID_WEIGHTS=$(../shared/tools/fid-inception-weights) .venv/bin/python \\
        benchmarks/real_data_floor.py --stages fmnist-2k fidlib cifar10-2k fmnist-10k --reuse-fidlib-test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dreamdata.atomic import write_text_atomic
from dreamdata.config import DataConfig
from dreamdata.evaluation import metrics
from dreamdata.evaluation.extractor import resolve_extractor
from dreamdata.evaluation.feature_cache import default_cache_dir, extract_features, features_key
from dreamdata.evaluation.sources import load_reference

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = {
    "fmnist": DataConfig(dataset="fashion-mnist", pad_to=32),
    "cifar10-train": DataConfig(dataset=f"zip:{SHARED / 'data/cifar10-train-jpeg.zip'}"),
    "cifar10-test": DataConfig(dataset=f"zip:{SHARED / 'data/cifar10-test-jpeg.zip'}"),
}
STAGES = ("fmnist-2k", "fidlib", "cifar10-2k", "fmnist-10k", "cifar10-10k")


def subset_images(name: str, split: str, count: int) -> torch.Tensor:
    """The same seeded subset `dreamdata evaluate --n COUNT` uses (so their cached features are shared).
    A 10k subset's first 2k images are the 2k subset (one seeded permutation, truncated)."""
    config = DATA["fmnist"] if name == "fmnist" else DATA[f"cifar10-{split}"]
    return load_reference(config, split, count, seed=0).images


def subset_index(total: int, count: int) -> torch.Tensor:
    """Indices of that subset in the split (see :func:`dreamdata.evaluation.suite.subsample`)."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(0))[:count]


PIECE = 2000  # images per cached feature piece: a killed run loses at most one piece


def piece_bounds(images: torch.Tensor, extractor) -> list[tuple[int, int]]:
    """[0:2000], then [2000:N] when an earlier run cached it whole, else [2000:4000], [4000:6000], ..."""
    count = len(images)
    bounds = [(0, min(PIECE, count))]
    if count > PIECE:
        whole = default_cache_dir() / "features" / f"{features_key(images[PIECE:].cpu(), extractor.name)}.pt"
        starts = [PIECE] if whole.is_file() else list(range(PIECE, count, PIECE))
        bounds += [(begin, count if len(starts) == 1 else min(begin + PIECE, count)) for begin in starts]
    return bounds


def pieces(images: torch.Tensor, extractor, label: str, timing: dict) -> torch.Tensor:
    """Features of ``images``, extracted (and cached) piece by piece (see :func:`piece_bounds`)."""
    out = []
    for begin, stop in piece_bounds(images, extractor):
        part = extract_features(images[begin:stop], extractor, description=f"{label} [{begin}:{stop}]")
        if part.seconds:
            timing.setdefault(label, []).append(1000 * part.seconds / (stop - begin))
        out.append(part.pool)
    return torch.cat(out)


def precompute(spec: str, extractor) -> None:
    """``NAME:SPLIT:BEGIN:END`` (e.g. ``cifar10:test:8000:10000``): cache the features of that piece of the
    10k subset, so that a second process can share a stage's work."""
    name, split, begin, stop = spec.split(":")
    images = subset_images(name, split, 10_000)[int(begin):int(stop)]
    extract_features(images, extractor, description=f"{name} {split} [{begin}:{stop}]")


def floor(real: torch.Tensor, fake: torch.Tensor) -> dict:
    started = time.perf_counter()
    kid_mean, kid_std = metrics.kid(real.double(), fake.double())
    return {"fid": metrics.fid(real.double(), fake.double()), "kid_mean": kid_mean, "kid_std": kid_std,
            "metric_seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--reuse-fidlib-test", action="store_true",
                        help="use fidlib's cached test[2k:10k] features once test[0:2k] matched exactly")
    parser.add_argument("--out", default="bench-results/real-data-floor.json")
    parser.add_argument("--precompute", nargs="+", metavar="NAME:SPLIT:BEGIN:END",
                        help="only cache the features of these pieces of the 10k subsets (e.g. from a second "
                             "process: cifar10:test:8000:10000), then exit")
    args = parser.parse_args()
    extractor = resolve_extractor()
    if args.precompute:
        for spec in args.precompute:
            precompute(spec, extractor)
        return 0
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report.update({"extractor": extractor.name, "torch": torch.__version__, "threads": torch.get_num_threads()})
    timing = report.setdefault("seconds_per_1k_images", {})
    sys.path.insert(0, str(SHARED / "bench"))
    import fidlib

    fidlib_test = fidlib.reference("fmnist-test", 10000, compute=False)["feats"]

    def save():
        write_text_atomic(out, json.dumps(report, indent=2) + "\n")

    fidlib_index = subset_index(10_000, 2000)  # the 2k test subset's rows in fidlib's (in-order) cache
    for stage in args.stages:
        if stage in report:
            print(f"{stage}: done already", flush=True)
            continue
        name, size = stage.rsplit("-", 1) if stage != "fidlib" else ("fmnist", "2k")
        n = 2000 if size == "2k" else 10_000
        label = "fmnist" if name == "fmnist" else "cifar10"
        train_features = pieces(subset_images(name, "train", n), extractor, f"{label} train", timing)
        if name == "fmnist":  # the 2k test subset is always computed by dreamdata and checked against fidlib
            ours_test_2k = pieces(subset_images(name, "test", 2000), extractor, f"{label} test", timing)
            difference = float((ours_test_2k.double() - torch.from_numpy(fidlib_test[fidlib_index]).double())
                               .abs().max())
        if stage == "fidlib":
            started = time.perf_counter()
            train_2k = subset_images(name, "train", 2000)
            theirs = fidlib.score_images(train_2k[:, 0].numpy(), "fmnist-test", 10000, tag="fidlib")
            timing["fidlib (features + FID + KID)"] = [1000 * (time.perf_counter() - started) / 2000]
            test_10k = torch.from_numpy(fidlib_test).float()
            test_10k[fidlib_index] = ours_test_2k
            ours = floor(test_10k, train_features)
            report[stage] = {
                "images": "Fashion-MNIST train (2k seeded subset) vs the 10,000 test images",
                "max_abs_feature_difference_on_2k_test_images": difference,
                "fid_fidlib": theirs["fid"], "fid_dreamdata": ours["fid"],
                "fid_relative_difference": abs(ours["fid"] - theirs["fid"]) / theirs["fid"],
                "kid_fidlib": theirs["kid"], "kid_dreamdata": ours["kid_mean"],
            }
        elif name == "fmnist" and n > 2000:
            if difference != 0.0 and not args.reuse_fidlib_test:
                raise SystemExit("give --reuse-fidlib-test only after the 2k features matched")
            if args.reuse_fidlib_test:
                if difference != 0.0:
                    raise SystemExit(f"dreamdata's test features differ from fidlib's by {difference}: not reusing")
                test_features = torch.from_numpy(fidlib_test).float()
                note = ("test features: fidlib's cache of all 10,000 (dreamdata's own features of a 2k subset "
                        "matched them bit for bit)")
            else:
                test_features = pieces(subset_images(name, "test", n), extractor, f"{label} test", timing)
                note = "all features computed by dreamdata"
            report[stage] = {"n": n, "note": note, **floor(test_features, train_features)}
        else:
            test_features = ours_test_2k if name == "fmnist" else pieces(
                subset_images(name, "test", n), extractor, f"{label} test", timing)
            report[stage] = {"n": n, "note": "all features computed by dreamdata",
                             **floor(test_features, train_features)}
            if name == "fmnist":
                report[stage]["max_abs_feature_difference_vs_fidlib_on_test"] = difference
        print(stage, report[stage], flush=True)
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
