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

The peer: diffusers ``UNet2DModel`` (block_out_channels 32,64,128, 2 layers per block, attention at 8x8
+ middle, 3,940,801 parameters: the same architecture as ``b32-124``). It is timed too (``diffusers-peer``,
included by default when diffusers is importable), so both are measured the same way on the same machine.

Floor: a b32-124 training step is ~204 GFLOP at batch 64 (FlopCounterMode), and this 2-core CPU does
~140 GFLOP/s in a large fp32 matmul, so no fp32 implementation of that architecture can pass ~43 img/s
here; faster means fewer FLOPs at the high resolutions (e.g. ``b16-1248``).
"""

from __future__ import annotations

import argparse
import importlib.util
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
    # name: UNet keyword arguments (in_channels=1, image_size=32, num_classes=10, attention at 8x8 + middle)
    # b32-124 is the diffusers peer's architecture exactly (same 3,940,801 parameters).
    "b32-124": dict(base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=2),
    "b32-124-nodrop": dict(base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=2, dropout=0.0),
    "b32-124-ss": dict(base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=2, scale_shift=True),
    "b48-122": dict(base_channels=48, channel_mults=(1, 2, 2), num_res_blocks=2),
    "b64-122-r1": dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=1),
    # cheaper layouts near 4 M parameters (fewer FLOPs at 32x32; 4-level ones need image_size % 8 == 0)
    "b24-126": dict(base_channels=24, channel_mults=(1, 2, 6), num_res_blocks=2),
    "b16-148": dict(base_channels=16, channel_mults=(1, 4, 8), num_res_blocks=2),
    "b32-1244-r1": dict(base_channels=32, channel_mults=(1, 2, 4, 4), num_res_blocks=1),
    "b16-1248": dict(base_channels=16, channel_mults=(1, 2, 4, 8), num_res_blocks=2),
}
DEFAULT = ["b32-124", "b32-124-nodrop", "b48-122", "b64-122-r1", "b32-1244-r1", "b16-1248"]


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


def measure(name: str, channels_last: bool, batch: int, warmup: int, steps: int, seed: int = 0,
            compile: bool = False) -> dict:
    torch.manual_seed(seed)
    model = build(name).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    network = torch.compile(model) if compile else model
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(batch, 1, 32, 32, generator=g).contiguous(memory_format=memory_format)
    noise = torch.randn(batch, 1, 32, 32, generator=g).contiguous(memory_format=memory_format)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, 11, (batch,), generator=g)  # 10 classes + the null label

    def step() -> None:
        loss = F.mse_loss(network(x0, t, y), noise)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help=f"configurations ({', '.join(CONFIGS)}, diffusers-peer)")
    parser.add_argument("--formats", default="nchw,cl", help="comma list of nchw and/or cl (channels_last)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (slow first steps)")
    parser.add_argument("--min-cpu", type=float, default=0.9,
                        help="repeat a measurement whose cpu share is below this (other load), up to --retries")
    parser.add_argument("--retries", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    names = args.only or DEFAULT + (["diffusers-peer"] if importlib.util.find_spec("diffusers") else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"compiled {args.compile}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'config':<16} {'format':<6} {'params':>10} {'img/s':>7} {'best':>7} {'cpu':>5}")
    for name in names:
        for fmt in args.formats.split(","):
            for attempt in range(args.retries + 1):
                r = measure(name, fmt == "cl", args.batch, args.warmup, args.steps, compile=args.compile)
                if r["cpu_share"] >= args.min_cpu or attempt == args.retries:
                    break
                print(f"  ({name} {fmt}: cpu share {r['cpu_share']:.2f}, other load; measuring again)", flush=True)
            print(f"{name:<16} {fmt:<6} {r['params']:>10,} {r['img_s']:>7.1f} {r['best_img_s']:>7.1f} "
                  f"{r['cpu_share']:>5.2f}", flush=True)


if __name__ == "__main__":
    main()
