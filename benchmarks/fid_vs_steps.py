"""FID@N against sampling steps for each sampler, on one trained run, with samples/s (issue #3).

    DREAMDATA_FID_WEIGHTS=$(../shared/tools/fid-inception-weights) .venv/bin/python benchmarks/fid_vs_steps.py \\
        RUN --samplers ddpm ddim dpm++2m --steps 10 20 50 100 1000 --n 2000 --out bench-results/fid-vs-steps

Each (sampler, steps) cell is one `dreamdata evaluate RUN --n N --ref-n 10000` (FID and KID of N samples
against the 10,000 test images, whose features are computed once and cached), written to
OUT/<sampler>-<steps>.json; finished cells are skipped when re-run. The table (OUT/table.md) gives FID, KID
and samples/s, and the DPM-Solver++ cells as a ratio of the 1000-step DDPM FID (the issue's target:
10–20 DPM-Solver++ steps within 10% of it). 1000-step DDPM on 2,000 samples is a GPU job: about 2M network
evaluations (hours on a laptop CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dreamdata.atomic import write_text_atomic
from dreamdata.cli import main as dreamdata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--samplers", nargs="+", default=["ddpm", "ddim", "dpm++2m"])
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50, 100, 1000])
    parser.add_argument("--spacing", default="linspace")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--ref-n", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="bench-results/fid-vs-steps")
    args = parser.parse_args()
    out = Path(args.out)
    cells = {}
    for sampler in args.samplers:
        for steps in args.steps:
            path = out / f"{sampler}-{steps}.json".replace("+", "p")
            if not path.is_file():
                code = dreamdata(["evaluate", args.run, "--n", str(args.n), "--ref-n", str(args.ref_n),
                                  "--sampler", sampler, "--steps", str(steps), "--spacing", args.spacing,
                                  "--metrics", "fid,kid", "--no-per-class", "--batch", str(args.batch),
                                  "--device", args.device, "--out", str(path)])
                if code:
                    return code
            cells[sampler, steps] = json.loads(path.read_text())
    reference = cells.get(("ddpm", 1000), {}).get("fid")
    lines = [f"FID@{args.n} against {args.ref_n:,} test images; run {args.run}; spacing {args.spacing}", "",
             "| sampler | steps | FID | KID | samples/s | FID / FID(DDPM, 1000) |", "|---|--:|--:|--:|--:|--:|"]
    for (sampler, steps), cell in cells.items():
        ratio = f"{cell['fid'] / reference:.3f}" if reference else "n/a"
        lines.append(f"| {sampler} | {steps} | {cell['fid']:.2f} | {cell['kid_mean']:.4f} | "
                     f"{cell['samples_per_second']:.1f} | {ratio} |")
    write_text_atomic(out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
