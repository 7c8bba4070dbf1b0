"""Dreaming throughput of the CPU layouts: one process with all threads against one process per core.

Runs ``dreamdata dream`` end to end (worker start-up, chunk writing and assembly included) with each
layout on a checkpoint of the ``demo`` UNet (1x28x28, 10 classes, the study's generator) after one
training step on random images: the weights do not change the speed, only the architecture and the
sampler settings do. Settings default to the Fashion-MNIST study's former sampler (DDIM, 25 steps,
guidance 1.5), with fewer images; ``--sampler dpm++2m-sde --steps 10`` measures the few-step one,
``--precision bf16`` the network under bf16 autocast.
Layouts, each run ``--repeats`` times in turn (so slow phases of other load hit all alike):

* ``1x1``: ``--workers 1`` under ``OMP_NUM_THREADS=1`` (the issue's baseline, one thread);
* ``1xN``: ``--workers 1`` (one process, torch's default thread count: all cores);
* ``Nx1``: ``--workers N`` (N processes of one thread each; what ``--workers auto`` picks).

Reported per layout: the median images/s of the manifest's ``dreaming`` record, and ``cpu``, the CPU
seconds the dream got per wall second per core it used (well below 1.0: other load competed and the
numbers are not the machine's). The datasets of all layouts are compared byte for byte.

Usage::

    python benchmarks/dream_layout.py                       # 20 per class, 2 repeats
    python benchmarks/dream_layout.py --per-class 50 --batch 250 --chunk 250 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_checkpoint(root: Path) -> Path:
    """A ``demo``-preset run trained one step on random 28x28 images of 10 classes."""
    from dreamdata.config import load_config
    from dreamdata.training.trainer import train

    rng = np.random.default_rng(0)
    npz = root / "random.npz"
    np.savez(npz, images=rng.integers(0, 256, (200, 28, 28, 1), dtype=np.uint8), labels=np.arange(200) % 10,
             class_names=np.array([f"class{c}" for c in range(10)]))
    config = load_config("demo", [f"data.dataset=npz:{npz}", f"runs_dir={root / 'runs'}", "train.minutes=null",
                                  "train.epochs=null", "train.steps=1", "train.sample_grid=false",
                                  "train.progress=false", "train.device=cpu",
                                  # the study's generator (configs/study-fmnist.yaml pins the demo UNet it measured)
                                  "model.base_channels=32", "model.channel_mults=[1, 2, 2]", "model.num_res_blocks=1"])
    return train(config).run_dir


def dream(run: Path, out: Path, workers: int, threads: int | None, args) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "dreamdata", "dream", str(run), "--out", str(out), "--device", "cpu",
               "--per-class", str(args.per_class), "--sampler", args.sampler, "--steps", str(args.steps),
               "--guidance", str(args.guidance), "--batch", str(args.batch), "--chunk", str(args.chunk),
               "--format", "npz", "--workers", str(workers), "--precision", args.precision]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    dreaming = json.loads((out / "manifest.json").read_text())["dreaming"]
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    cores = dreaming["processes"] * dreaming["threads"]
    return {**dreaming, "wall": wall, "cpu": cpu / wall / cores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--sampler", default="ddim", help="any sampler `dream` takes, e.g. dpm++2m-sde")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="the network's arithmetic")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()

    n = args.cores
    layouts = {"1x1": (1, 1), f"1x{n}": (1, None), f"{n}x1": (n, None)}
    print(f"{n} cores, load average {os.getloadavg()[0]:.2f}; {10 * args.per_class} images per run, "
          f"{args.sampler} {args.steps} steps, guidance {args.guidance}, batch {args.batch}, chunk {args.chunk}, "
          f"precision {args.precision}",
          flush=True)
    results: dict[str, list[dict]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        run = make_checkpoint(root)
        first: dict[str, np.ndarray] = {}
        identical = True
        for repeat in range(args.repeats):
            for name, (workers, threads) in layouts.items():
                out = root / f"{name}-{repeat}"
                result = dream(run, out, workers, threads, args)
                results[name].append(result)
                print(f"  {name} #{repeat}: {result['images_per_second']:.2f} images/s ({result['layout']}), "
                      f"wall {result['wall']:.1f} s, cpu {result['cpu']:.2f}, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
                with np.load(out / "dataset.npz") as stored:
                    images = stored["images"]
                first.setdefault("images", images)
                if not np.array_equal(first["images"], images):
                    identical = False
                    print(f"  {name} #{repeat}: images DIFFER from the first layout's", flush=True)
    print(f"{'layout':<8} {'images/s':>9} {'cpu':>5}  runs")
    for name, runs in results.items():
        rates = [r["images_per_second"] for r in runs]
        print(f"{name:<8} {statistics.median(rates):>9.2f} {statistics.median(r['cpu'] for r in runs):>5.2f}  "
              f"{', '.join(f'{rate:.2f}' for rate in rates)}")
    print("images identical across layouts" if identical else "images DIFFER across layouts", flush=True)


if __name__ == "__main__":
    main()
