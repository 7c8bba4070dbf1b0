"""`dreamdata train`, `dreamdata demo` and `dreamdata presets`."""

from __future__ import annotations

import os
from pathlib import Path

from dreamdata.errors import DreamdataError


def add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a diffusion model from a YAML config or preset",
        description="Train a diffusion model. CONFIG is a YAML file or a preset name (see `dreamdata presets`); "
                    "KEY=VALUE arguments override it, e.g. train.steps=2000 data.per_class=50.")
    parser.add_argument("config", nargs="?", help="YAML file or preset name (omit with --resume)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its latest checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--data-root", help="same as data.data_root=PATH")
    parser.add_argument("--run-dir", help="write the run here (a new or empty directory) instead of a new numbered "
                                          "directory; continue a run with --resume")
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
        from dreamdata.process import build_process

        build_process(config.process)  # a schedule that underflows float32 is refused here too
        print(config.to_yaml(), end="")
        return 0
    from dreamdata.training.trainer import train

    run_dir = Path(args.run_dir).expanduser() if args.run_dir else None  # must be new or empty
    result = train(config, resume=args.resume, run_dir=run_dir)
    if result.run_dir is not None:
        from dreamdata.reports.html import write_report_or_warn

        print(f"done: {result.step} steps; run directory {result.run_dir}")
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one page from rank 0
            write_report_or_warn(result.run_dir)
    return 0



def add_demo(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the main job: train a small Fashion-MNIST model and sample it")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the demo preset")
    parser.add_argument("--runs-dir", default="runs", help="where the run directory goes (default ./runs)")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    from dreamdata.demo import run_demo

    run_demo(list(args.overrides), runs_dir=args.runs_dir)
    return 0


def add_presets(subparsers) -> None:
    parser = subparsers.add_parser("presets", help="list the shipped config presets")
    parser.set_defaults(handler=_run_presets)


def _run_presets(args) -> int:
    from dreamdata.config import preset_names

    for name in preset_names():
        print(name)
    return 0
