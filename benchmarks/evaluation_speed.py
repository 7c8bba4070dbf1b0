"""Evaluation cost on this machine: Inception features per 1,000 images, and the metric maths at N = 2k / 10k.

    DREAMDATA_FID_WEIGHTS=$(../shared/tools/fid-inception-weights) .venv/bin/python benchmarks/evaluation_speed.py

Features: ``--images`` Fashion-MNIST test images (padded to 32) through dreamdata's extractor, cache off.
Metrics: FID, KID (100 subsets of 1,000) and precision/recall (k = 3) on random 2048-d features, which cost
the same as real ones. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dreamdata.config import DataConfig
from dreamdata.evaluation import metrics
from dreamdata.evaluation.extractor import resolve_extractor
from dreamdata.evaluation.feature_cache import extract_features
from dreamdata.evaluation.sources import load_reference


def timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    args = parser.parse_args()
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    images = load_reference(DataConfig(dataset="fashion-mnist", pad_to=32), "test", args.images).images
    extractor = resolve_extractor()
    extract_features(images[:10], extractor, use_cache=False, progress=False)  # warm-up
    seconds = timed(extract_features, images, extractor, use_cache=False, progress=False)
    report["inception_seconds_per_1k_images"] = 1000 * seconds / len(images)
    generator = torch.Generator().manual_seed(0)
    for n in args.sizes:
        real = torch.randn(n, 2048, generator=generator, dtype=torch.float64)
        fake = torch.randn(n, 2048, generator=generator, dtype=torch.float64) + 0.1
        report[f"N={n}"] = {"fid_seconds": timed(metrics.fid, real, fake),
                            "kid_seconds": timed(metrics.kid, real, fake),
                            "precision_recall_seconds": timed(metrics.precision_recall, real, fake)}
        print(n, report[f"N={n}"], flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
