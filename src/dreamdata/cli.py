"""The ``dreamdata`` command line: ``train``, ``sample``, ``interpolate``, ``demo``, ``presets``.

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
    parser = subparsers.add_parser(
        "sample", help="sample images (one grid row per class) from a trained run",
        description="Sample a trained run. Writes grid.png (one row per class), <class>/<k>.png, samples.npz "
                    "(uint8 NHWC images, labels, class_names) and sample.json (the arguments, checkpoint and "
                    "step) into --out. Sample k of class c is seeded from (--seed, k * num_classes + c), so "
                    "an image does not depend on --batch, --n or which other classes are asked for.")
    parser.add_argument("run", help="run directory or .safetensors checkpoint")
    parser.add_argument("--n", type=int, default=8, help="samples per class (default 8)")
    parser.add_argument("--class", dest="classes", action="append", metavar="NAME|INDEX|all",
                        help="class(es) to sample, repeatable or comma-separated (default all)")
    parser.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale w (default 0)")
    parser.add_argument("--sampler", default="ddpm", help="ddpm, ddim, dpm++2m, ... (default ddpm)")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (default 100, capped at T)")
    parser.add_argument("--spacing", default="linspace",
                        help="timestep spacing: linspace, leading, trailing, quadratic (default linspace)")
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta (0 = deterministic; ddim only)")
    parser.add_argument("--x0-clip", default="static", help="x0 clipping: none, static, dynamic (default static)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64,
                        help="samples per sampling batch (default 64; does not change the images)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--trajectory", type=int, metavar="K",
                        help="also write trajectory.png: x_t and predicted x0 every K steps, first sample per class")
    parser.add_argument("--forward-strip", type=int, nargs="?", const=8, metavar="K",
                        help="also write forward.png: a training image per class noised at K evenly spaced t "
                             "(default K=8)")
    parser.add_argument("--out", help="output directory (default RUN/samples/<sampler>-<steps>steps-w<guidance>-...); "
                                      "a path ending in .png writes only the grid there")
    parser.set_defaults(handler=_run_sample)


def _load_for_sampling(args):
    """The trained model on the chosen device, with user errors turned into DreamdataError."""
    from dreamdata.training.pretrained import load_trained
    from dreamdata.training.setup import resolve_device

    device = resolve_device(args.device)
    return load_trained(args.run, use_ema=not args.no_ema, device=device), device


def _check_sampler(name: str) -> None:
    from dreamdata.sampling import sampler_names

    if name not in sampler_names():
        raise DreamdataError(f"--sampler {name!r}: unknown sampler; known: {', '.join(sampler_names())}")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise DreamdataError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _sample_out_dir(args, model, timesteps, classes: list[int], conditional: bool) -> Path:
    """``--out``, or ``RUN/samples/<sampler>-<S>steps-w<w>-seed<seed>-step<step>[-...]``."""
    if args.out:
        return Path(args.out).expanduser()
    name = f"{args.sampler}-{timesteps.numel()}steps-w{args.guidance:g}-seed{args.seed}-step{model.step}"
    name += "" if args.spacing == "linspace" else f"-{args.spacing}"
    name += "" if args.eta is None else f"-eta{args.eta:g}"
    name += "" if args.x0_clip == "static" else f"-clip{args.x0_clip}"
    name += "-raw" if args.no_ema else ""
    if conditional and len(classes) < len(model.class_names):
        name += "-classes" + "_".join(str(c) for c in classes)
    return model.checkpoint.parent.parent / "samples" / name.replace("+", "p")


def _forward_strip_images(model, classes: list[int], conditional: bool):
    """The first training image of each class asked for (every class for unconditional models):
    ``(class names, float images [K, C, H, W] in [-1, 1])``."""
    import torch

    from dreamdata.data import load_dataset

    data = load_dataset(model.config.data, "train")
    wanted = classes if conditional else sorted(set(data.labels.tolist()))
    clean = []
    for label in wanted:
        where = (data.labels == label).nonzero().flatten()
        if where.numel() == 0:
            raise DreamdataError(f"--forward-strip: the training data has no image of class "
                                 f"{data.class_names[label]!r}")
        clean.append(data.images[int(where[0])])
    return [data.class_names[label] for label in wanted], torch.stack(clean).float().div(127.5).sub(1.0)


def _write_forward_strip(path: Path, process, names: list[str], clean, columns: int, seed: int) -> None:
    """``q_sample`` of each clean image at ``columns`` evenly spaced t, one fixed noise per image."""
    import torch

    from dreamdata.process.rng import per_sample_noise
    from dreamdata.reports.strips import write_forward_strip

    shown = torch.linspace(0, process.num_steps - 1, columns, dtype=torch.float64).round().long().unique()
    noise = per_sample_noise(seed, range(clean.shape[0]), clean.shape[1:])
    noised = torch.stack([process.q_sample(clean, torch.full((clean.shape[0],), t), noise)
                          for t in shown.tolist()], dim=1)
    write_forward_strip(path, names, shown.tolist(), clean, noised, title=r"forward process $q(x_t \mid x_0)$")


def _run_sample(args) -> int:
    import json

    import torch

    from dreamdata import __version__
    from dreamdata.atomic import write_text_atomic
    from dreamdata.sampling.generate import (TrajectoryRecorder, generate, resolve_classes, sampling_timesteps,
                                             uint8_grid, write_png, write_samples)
    from dreamdata.sampling.thresholding import X0_CLIPS

    _check_positive(n=args.n, steps=args.steps, batch=args.batch, trajectory=args.trajectory,
                    forward_strip=args.forward_strip)
    _check_sampler(args.sampler)
    if args.eta is not None and args.sampler != "ddim":
        raise DreamdataError(f"--eta applies to the ddim sampler only (got --sampler {args.sampler})")
    if args.eta is not None and not 0.0 <= args.eta <= 1.0:
        raise DreamdataError(f"--eta must lie in [0, 1], got {args.eta:g}")
    if args.x0_clip not in X0_CLIPS:
        raise DreamdataError(f"--x0-clip {args.x0_clip!r}: expected one of {', '.join(X0_CLIPS)}")
    grid_only = bool(args.out) and Path(args.out).suffix.lower() == ".png"
    if grid_only and (args.trajectory or args.forward_strip):
        raise DreamdataError(f"--out {args.out}: a .png writes only the grid; give a directory for "
                             "--trajectory/--forward-strip")
    model, device = _load_for_sampling(args)
    network, process = model.network, model.process
    conditional = int(getattr(network, "num_classes", 0)) > 0
    if conditional:
        classes = resolve_classes(args.classes, model.class_names)
    else:
        if args.classes:
            print("dreamdata sample: note: the model is unconditional; --class is ignored", file=sys.stderr)
        if args.guidance != 0:
            raise DreamdataError(f"--guidance {args.guidance:g}: the model is unconditional, so there is "
                                 "nothing to guide towards (use --guidance 0)")
        classes = []
    try:
        timesteps = sampling_timesteps(process, args.steps, args.spacing)
    except ValueError as error:
        raise DreamdataError(f"--spacing/--steps: {error}") from None
    out_dir = _sample_out_dir(args, model, timesteps, classes, conditional)
    # load the data before sampling, so that a missing dataset fails fast
    forward = _forward_strip_images(model, classes, conditional) if args.forward_strip else None

    # Sample k of class c has global index k * num_classes + c: independent of --n, --class and --batch.
    num_classes = max(1, int(getattr(network, "num_classes", 0)))
    rows = classes if conditional else [0]
    labels = torch.tensor(rows, dtype=torch.long).repeat_interleave(args.n)
    indices = torch.arange(args.n).repeat(len(rows)) * num_classes + labels
    recorder = None
    if args.trajectory:
        recorder = TrajectoryRecorder(indices[::args.n].tolist(), args.trajectory, timesteps.numel())
    images = generate(network, process, labels if conditional else None, labels.numel(), args.seed,
                      sampler=args.sampler, steps=args.steps, spacing=args.spacing, guidance_scale=args.guidance,
                      batch_size=args.batch, device=device, x0_clip=args.x0_clip, progress=True,
                      indices=indices, on_step=recorder, **({} if args.eta is None else {"eta": args.eta}))
    names = [model.class_names[c] for c in classes] if conditional else ["unconditional"]
    if grid_only:  # the command's original form: just the grid, at the given path
        write_png(uint8_grid(images, nrow=args.n), out_dir)
        print(f"wrote {out_dir} (rows: {', '.join(names)})")
        return 0

    write_samples(out_dir, images, labels if conditional else None, model.class_names, per_row=args.n,
                  extra_arrays={"indices": indices.numpy()})
    files = ["grid.png", "samples.npz"]
    if recorder is not None:
        from dreamdata.reports.strips import write_trajectory_strip

        steps_shown, x_t, x0_hat = recorder.stacked()
        write_trajectory_strip(out_dir / "trajectory.png", names, steps_shown, x_t, x0_hat,
                               title=f"{args.sampler}, {timesteps.numel()} steps, w={args.guidance:g}")
        files.append("trajectory.png")
    if forward is not None:
        _write_forward_strip(out_dir / "forward.png", process, *forward, columns=args.forward_strip, seed=args.seed)
        files.append("forward.png")
    record = {
        "command": "sample", "run": str(model.checkpoint.parent.parent), "checkpoint": str(model.checkpoint),
        "step": model.step, "weights": "raw" if args.no_ema else "ema", "sampler": args.sampler,
        "steps": timesteps.numel(), "spacing": args.spacing, "timesteps": timesteps.tolist(), "eta": args.eta,
        "x0_clip": args.x0_clip, "guidance": args.guidance, "seed": args.seed, "n": args.n,
        "classes": names if conditional else None, "class_indices": classes if conditional else None,
        "sample_index": "k * num_classes + class (k = position within the class)",
        "batch": args.batch, "device": str(device), "trajectory": args.trajectory,
        "forward_strip": args.forward_strip, "files": files, "dreamdata": __version__, "torch": torch.__version__,
    }
    write_text_atomic(out_dir / "sample.json", json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(images)} samples to {out_dir} "
          f"(rows: {', '.join(names)}; {', '.join(files)}, <class>/<k>.png, sample.json)")
    return 0


def _add_interpolate(subparsers) -> None:
    parser = subparsers.add_parser(
        "interpolate", help="a strip of deterministic DDIM samples between two seeds or two classes",
        description="Decode with deterministic DDIM (eta = 0) a strip of --frames images: between the noises of "
                    "--seed and --seed2 (slerp) for one class, or - with --to-class - from class A to class B "
                    "with the noise of --seed fixed, mixing the network outputs eps = (1-l) eps(x, A) + "
                    "l eps(x, B) (guided by --guidance on top). The noise of a seed is that of the first "
                    "image `dreamdata sample --class A --seed S` draws, so the end frames are its DDIM "
                    "samples. Same arguments, same pixels.")
    parser.add_argument("run", help="run directory or .safetensors checkpoint")
    parser.add_argument("--class", dest="class_a", metavar="A",
                        help="class name or index (not for unconditional models)")
    parser.add_argument("--to-class", dest="class_b", metavar="B", help="interpolate from class A to this class")
    parser.add_argument("--frames", type=int, default=8, help="images in the strip, ends included (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="noise of the first frame (default 0)")
    parser.add_argument("--seed2", type=int, help="noise of the last frame (default --seed + 1; not with --to-class)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--spacing", default="linspace", help="timestep spacing (default linspace)")
    parser.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale w (default 0)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--out", metavar="FILE", help="output PNG (default RUN/samples/interpolate-....png)")
    parser.set_defaults(handler=_run_interpolate)


def _run_interpolate(args) -> int:
    from dreamdata.sampling.generate import resolve_classes, sampling_timesteps, uint8_grid, write_png
    from dreamdata.sampling.interpolate import interpolate_classes, interpolate_seeds

    _check_positive(steps=args.steps)
    if args.frames < 2:
        raise DreamdataError(f"--frames must be at least 2, got {args.frames}")
    if args.class_b is not None and args.seed2 is not None:
        raise DreamdataError("--seed2 interpolates between noises, --to-class between classes: give one of them")
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise DreamdataError(f"--out {args.out}: the strip is a PNG; give a path ending in .png")
    model, device = _load_for_sampling(args)
    network, process = model.network, model.process
    conditional = int(getattr(network, "num_classes", 0)) > 0

    def one_class(spec: str, option: str) -> int:
        if "," in spec:
            raise DreamdataError(f"{option} takes one class name or index, got {spec!r}")
        return resolve_classes([spec], model.class_names, allow_all=False)[0]

    if conditional:
        if args.class_a is None:
            raise DreamdataError(f"--class is required for a class-conditional model "
                                 f"(classes: {', '.join(model.class_names)})")
        class_a = one_class(args.class_a, "--class")
        class_b = one_class(args.class_b, "--to-class") if args.class_b is not None else None
    else:
        if args.class_a is not None or args.class_b is not None:
            raise DreamdataError("the model is unconditional: --class/--to-class do not apply")
        if args.guidance != 0:
            raise DreamdataError(f"--guidance {args.guidance:g}: the model is unconditional (use --guidance 0)")
        class_a = class_b = None
    seed2 = args.seed + 1 if args.seed2 is None else args.seed2
    # The noise of `dreamdata sample`'s first image of class A (global index k * num_classes + class, k = 0),
    # so the end frames are exactly what `dreamdata sample --sampler ddim --class A --seed S` draws first.
    index = class_a if class_a is not None else 0
    common = dict(frames=args.frames, steps=args.steps, spacing=args.spacing, guidance_scale=args.guidance,
                  device=device, index=index)
    try:
        sampling_timesteps(process, args.steps, args.spacing)
    except ValueError as error:
        raise DreamdataError(f"--spacing/--steps: {error}") from None
    if class_b is not None:
        frames = interpolate_classes(network, process, class_a, class_b, args.seed, **common)
        what = f"class {model.class_names[class_a]} -> {model.class_names[class_b]}, seed {args.seed}"
        name = f"interpolate-class{class_a}-to{class_b}-seed{args.seed}"
    else:
        frames = interpolate_seeds(network, process, class_a, args.seed, seed2, **common)
        label = model.class_names[class_a] if class_a is not None else "unconditional"
        what = f"{label}, seed {args.seed} -> {seed2}"
        name = f"interpolate-{'uncond' if class_a is None else f'class{class_a}'}-seed{args.seed}-to{seed2}"
    name += f"-{args.steps}steps-w{args.guidance:g}-step{model.step}.png"
    out = Path(args.out).expanduser() if args.out else model.checkpoint.parent.parent / "samples" / name
    write_png(uint8_grid(frames, nrow=args.frames), out)
    print(f"wrote {out} ({args.frames} frames, {what}, DDIM {args.steps} steps, w={args.guidance:g})")
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
    for add in (_add_demo, _add_train, _add_sample, _add_interpolate, _add_presets):
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
