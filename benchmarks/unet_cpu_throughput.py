"""CPU training throughput of the dreamdata U-Net (images/s for forward + backward + AdamW step).

Benchmark setting: batch 64 of 1x32x32 images, 10 classes (+ null), ``torch.set_num_threads(2)``,
random data and an epsilon-MSE loss (the data do not affect the speed). Each configuration is timed
alone, one after another: a few warmup steps, then ``--steps`` timed steps; we report the parameter
count, images/s over the timed steps, images/s of the fastest step (less sensitive to other load) and
``cpu``: CPU seconds the process got per wall second per thread (well below 1.0 = other processes
competed for the cores and the numbers are not trustworthy).

Usage::

    python benchmarks/unet_cpu_throughput.py                 # the default table
    python benchmarks/unet_cpu_throughput.py --only b32-124  # one configuration, both memory formats
    python benchmarks/unet_cpu_throughput.py --formats nchw --steps 20
    .venv-peers/bin/python benchmarks/unet_cpu_throughput.py --only diffusers-peer  # needs diffusers

The peer it was written against: diffusers ``UNet2DModel`` (block_out_channels 32,64,128, 2 layers per
block, attention at 8x8 + middle, 3.9 M parameters), about 60 images/s on the same 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from dreamdata.networks import UNet, count_parameters
except ImportError:  # run from a checkout without installing (e.g. with the peers' environment)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dreamdata.networks import UNet, count_parameters

CONFIGS = {
    # name: UNet keyword arguments (in_channels=1, image_size=32, num_classes=10 are fixed)
    "b32-124": dict(base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=2),
    "b32-124-ss": dict(base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=2, scale_shift=True),
    "b32-124-nodrop": dict(base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=2, dropout=0.0),
    "b48-122": dict(base_channels=48, channel_mults=(1, 2, 2), num_res_blocks=2),
    "b64-122-r1": dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=1),
    "b32-1244-r1": dict(base_channels=32, channel_mults=(1, 2, 4, 4), num_res_blocks=1),
}
DEFAULT = ["b32-124", "b48-122", "b64-122-r1"]


class DiffusersPeer(torch.nn.Module):
    """diffusers' UNet2DModel in the peer configuration, behind the dreamdata call contract."""

    def __init__(self):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(
            sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128),
            layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), num_class_embeds=11)

    def forward(self, x, t, class_labels=None):
        return self.unet(x, t, class_labels=class_labels).sample


def build(name: str) -> torch.nn.Module:
    if name == "diffusers-peer":
        return DiffusersPeer()
    return UNet(1, 32, 10, attention_resolutions=(8,), **CONFIGS[name])


def measure(name: str, channels_last: bool, batch: int, warmup: int, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = build(name).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, 1, 32, 32, generator=g).contiguous(memory_format=memory_format)
    noise = torch.randn(batch, 1, 32, 32, generator=g).contiguous(memory_format=memory_format)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, 11, (batch,), generator=g)  # 10 classes + the null label

    def step() -> None:
        loss = F.mse_loss(model(x0, t, y), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    cpu_start = time.process_time()
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # CPU seconds this process got per wall second per thread: well below 1 means other load competed.
    share = (time.process_time() - cpu_start) / sum(times) / torch.get_num_threads()
    return dict(params=count_parameters(model), img_s=batch * steps / sum(times), best_img_s=batch / min(times),
                cpu_share=share)


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS after every step.

    By default glibc serves blocks of a few MB with ``mmap`` and unmaps them on ``free``; a training step
    allocates and frees hundreds of such activation tensors, so every step pays page faults to map fresh
    zeroed pages (expensive in a VM). Raising ``M_MMAP_THRESHOLD`` to its maximum (32 MiB on 64-bit) and
    ``M_TRIM_THRESHOLD`` far above it makes glibc reuse the memory. Same effect as the environment
    variables ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296``. Linux/glibc only.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(
            libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help=f"configurations ({', '.join(CONFIGS)}, diffusers-peer)")
    parser.add_argument("--formats", default="nchw,cl", help="comma list of nchw and/or cl (channels_last)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--malloc", action="store_true", help="tune glibc malloc first (see tune_malloc)")
    parser.add_argument("--min-cpu", type=float, default=0.9,
                        help="repeat a measurement whose cpu share is below this (other load), up to --retries")
    parser.add_argument("--retries", type=int, default=3)
    args = parser.parse_args()

    if args.malloc and not tune_malloc():
        print("warning: could not tune malloc (not glibc?)")
    torch.set_num_threads(args.threads)
    names = args.only or DEFAULT
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"malloc tuned {args.malloc}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'config':<16} {'format':<6} {'params':>10} {'img/s':>7} {'best':>7} {'cpu':>5}")
    for name in names:
        for fmt in args.formats.split(","):
            for attempt in range(args.retries + 1):
                r = measure(name, fmt == "cl", args.batch, args.warmup, args.steps)
                if r["cpu_share"] >= args.min_cpu or attempt == args.retries:
                    break
                print(f"  ({name} {fmt}: cpu share {r['cpu_share']:.2f}, other load; measuring again)", flush=True)
            print(f"{name:<16} {fmt:<6} {r['params']:>10,} {r['img_s']:>7.1f} {r['best_img_s']:>7.1f} {r['cpu_share']:>5.2f}", flush=True)


if __name__ == "__main__":
    main()
