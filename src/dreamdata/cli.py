"""The ``dreamdata`` command line: ``train``, ``sample``, ``demo``, ``presets``.

Errors caused by user input (:class:`dreamdata.errors.DreamdataError`) are printed as one line naming
the file/key/value at fault, with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from dreamdata.errors import DreamdataError


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a diffusion model from a YAML config or preset",
        description="Train a diffusion model. CONFIG is a YAML file or a preset name (see `dreamdata presets`); "
                    "KEY=VALUE arguments override it, e.g. train.steps=2000 data.per_class=50.")
    parser.add_argument("config", nargs="?", help="YAML file or preset name (omit with --resume)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its latest checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--data-root", help="same as data.data_root=PATH")
    parser.add_argument("--run-dir", help="write the run here instead of a new numbered directory")
    parser.set_defaults(handler=_run_train)


def _run_train(args) -> int:
    from dreamdata.config import load_config, merge_overrides
    from dreamdata.training import run_dir as rd

    overrides = list(args.overrides)
    if args.config and "=" in args.config and not Path(args.config).exists():
        overrides.insert(0, args.config)  # `dreamdata train --resume RUN key=value`
        args.config = None
    if args.data_root:
        overrides.append(f"data.data_root={args.data_root}")
    if args.resume:
        config = merge_overrides(rd.read_run_config(rd.resolve_run_dir(args.resume)), overrides)
    else:
        if not args.config:
            raise DreamdataError("train: give a CONFIG (YAML file or preset name) or --resume RUN")
        config = load_config(args.config, overrides)
    if args.dry_run:
        print(config.to_yaml(), end="")
        return 0
    from dreamdata.training.trainer import train

    run_dir = None
    if args.run_dir:
        run_dir = Path(args.run_dir).expanduser()
        run_dir.mkdir(parents=True, exist_ok=True)
    result = train(config, resume=args.resume, run_dir=run_dir)
    if result.run_dir is not None:
        print(f"done: {result.step} steps; run directory {result.run_dir}")
    return 0


def _add_sample(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="sample a grid (one row per class) from a trained run")
    parser.add_argument("run", help="run directory or .safetensors checkpoint")
    parser.add_argument("--n", type=int, default=8, help="samples per class (default 8)")
    parser.add_argument("--steps", type=int, default=100, help="ancestral DDPM steps (default 100)")
    parser.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale w (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--out", help="output PNG (default RUN/samples/sample-<step>-<steps>.png)")
    parser.set_defaults(handler=_run_sample)


def _run_sample(args) -> int:
    from dreamdata.sampling.preview import write_class_grid
    from dreamdata.training.pretrained import load_trained
    from dreamdata.training.setup import resolve_device

    device = resolve_device(args.device)
    model = load_trained(args.run, use_ema=not args.no_ema, device=device)
    out = Path(args.out) if args.out else (
        model.checkpoint.parent.parent / "samples" / f"sample-step{model.step}-{args.steps}steps-w{args.guidance:g}.png")
    write_class_grid(model.network, model.process, out, per_class=args.n, steps=args.steps, seed=args.seed,
                     device=device, guidance_scale=args.guidance, progress=True)
    print(f"wrote {out} (rows: {', '.join(model.class_names) if model.network.num_classes else 'unconditional'})")
    return 0


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the main job: train a small Fashion-MNIST model and sample it")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the demo preset")
    parser.add_argument("--runs-dir", default="runs", help="where the run directory goes (default ./runs)")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    from dreamdata.demo import run_demo

    run_demo(list(args.overrides), runs_dir=args.runs_dir)
    return 0


def _add_presets(subparsers) -> None:
    parser = subparsers.add_parser("presets", help="list the shipped config presets")
    parser.set_defaults(handler=_run_presets)


def _run_presets(args) -> int:
    from dreamdata.config import preset_names

    for name in preset_names():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dreamdata import __version__

    parser = argparse.ArgumentParser(prog="dreamdata", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dreamdata {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_train, _add_sample, _add_presets):
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DreamdataError as error:
        print(f"dreamdata {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
