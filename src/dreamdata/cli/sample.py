"""`dreamdata sample`: samples, grids, trajectories and forward-process strips from a trained run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dreamdata.cli.arguments import (add_autoguide_arguments, add_guidance_arguments, add_precision_argument,
                                     check_output_directory, check_positive, finite_float, non_negative_float)
from dreamdata.errors import DreamdataError


def add_sample(subparsers) -> None:
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
    add_guidance_arguments(parser, "sample.json")
    add_autoguide_arguments(parser, "sample.json")
    parser.add_argument("--sampler", default=None,
                        help="ddpm, ddim, dpm++2m, ... for Gaussian runs (default ddpm); cold-improved or "
                             "cold-naive for blur (cold diffusion) runs (default cold-improved); a distilled run: "
                             "the DDIM it was distilled for")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default 100 for Gaussian runs, every step T for blur runs, a distilled "
                             "run's own; capped at T)")
    parser.add_argument("--spacing", default=None,
                        help="timestep spacing: linspace, leading, trailing, quadratic, logsnr, quadratic-trailing, "
                             "or searched (the grid `dreamdata search-grid` stored for the checkpoint) (default "
                             "linspace; a distilled run's own)")
    parser.add_argument("--eta", type=finite_float, default=None, help="DDIM eta (0 = deterministic; ddim only)")
    parser.add_argument("--x0-clip", default="static", help="x0 clipping: none, static, dynamic (default static)")
    parser.add_argument("--seed", type=int, default=0)
    add_precision_argument(parser, "sample.json")
    parser.add_argument("--batch", type=int, default=64,
                        help="samples per sampling batch (default 64; does not change the images)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--trajectory", type=int, metavar="K",
                        help="also write trajectory.png: x_t and predicted x0 every K steps, first sample per class")
    parser.add_argument("--forward-strip", type=int, nargs="?", const=8, metavar="K",
                        help="also write forward.png: a training image per class noised at K evenly spaced t "
                             "(default K=8)")
    parser.add_argument("--start-noise", type=non_negative_float, default=None, metavar="STD",
                        help="blur runs: std of the noise added to the flat start image (default: the run's "
                             "process.blur_start_noise)")
    parser.add_argument("--from-test", type=int, default=None, metavar="N",
                        help="conditional generation: degrade the first N test images fully (t = T) and restore "
                             "them; writes originals.png, degraded.png, restored.png, restoration.png (the first "
                             "16 of each, one row each) and restoration.npz with RMSE/PSNR/SSIM in sample.json")
    parser.add_argument("--out", help="output directory (default RUN/samples/<sampler>-<steps>steps-w<guidance>-...); "
                                      "a path ending in .png writes only the grid there")
    parser.set_defaults(handler=_run_sample)


def _sample_out_dir(args, model, timesteps, classes: list[int], conditional: bool, guide=None) -> Path:
    """``--out``, or ``RUN/samples/<sampler>-<S>steps-w<w>[-gi<lo>-<hi>]-seed<seed>-step<step>[-...]``."""
    if args.out:
        return Path(args.out).expanduser()
    name = f"{args.sampler}-{timesteps.numel()}steps-w{args.guidance:g}"
    name += "" if args.guidance_interval is None else "-gi{:g}-{:g}".format(*args.guidance_interval)
    name += f"-seed{args.seed}-step{model.step}"
    name += "" if args.spacing == "linspace" else f"-{args.spacing}"
    name += "" if args.eta is None else f"-eta{args.eta:g}"
    name += "" if args.start_noise is None else f"-noise{args.start_noise:g}"
    name += "" if args.x0_clip == "static" else f"-clip{args.x0_clip}"
    name += "" if args.precision == "fp32" else f"-{args.precision}"
    name += "-raw" if args.no_ema else ""
    name += "" if guide is None else f"-ag{args.autoguide_weight:g}-step{guide.step}"
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
    import torch

    from dreamdata import __version__
    from dreamdata.atomic import write_text_atomic
    from dreamdata.finite_json import dumps as finite_dumps
    from dreamdata.sampling.generate import (
        TrajectoryRecorder,
        generate,
        model_source,
        resolve_classes,
        sampling_timesteps,
    )
    from dreamdata.sampling.saving import uint8_grid, write_png, write_samples
    from dreamdata.sampling.from_run import (autoguide, check_guidance_interval_fits, check_sampler,
                                             distilled_sampling, load_for_sampling, refuse_for_gan, sampler_and_steps,
                                             start_distribution)
    from dreamdata.sampling.generate import network_evaluations_per_sample
    from dreamdata.sampling.thresholding import X0_CLIPS

    check_positive(n=args.n, steps=args.steps, batch=args.batch, trajectory=args.trajectory,
                    forward_strip=args.forward_strip)
    if args.sampler is not None:
        check_sampler(args.sampler)
    if args.eta is not None and args.sampler != "ddim":
        raise DreamdataError(f"--eta applies to the ddim sampler only (got --sampler {args.sampler or 'default'})")
    if args.eta is not None and not 0.0 <= args.eta <= 1.0:
        raise DreamdataError(f"--eta must lie in [0, 1], got {args.eta:g}")
    if args.x0_clip not in X0_CLIPS:
        raise DreamdataError(f"--x0-clip {args.x0_clip!r}: expected one of {', '.join(X0_CLIPS)}")
    check_guidance_interval_fits(None, args.guidance, args.guidance_interval)  # before loading the model
    grid_only = bool(args.out) and Path(args.out).suffix.lower() == ".png"
    if args.out:  # a .png grid goes into its parent directory
        check_output_directory(args.out, file_inside=grid_only)
    if grid_only and (args.trajectory or args.forward_strip):
        raise DreamdataError(f"--out {args.out}: a .png writes only the grid; give a directory for "
                             "--trajectory/--forward-strip")
    model, device = load_for_sampling(args.run, args.device, use_ema=not args.no_ema)
    refuse_for_gan(model.process, autoguide=args.autoguide)
    guide = None
    if args.autoguide is not None:
        model.network, guide = autoguide(model, args.autoguide, args.autoguide_weight, use_ema=not args.no_ema)
    network, process = model.network, model.process
    refuse_for_gan(process, guidance=args.guidance, guidance_interval=args.guidance_interval, eta=args.eta,
                   from_test=args.from_test, forward_strip=args.forward_strip, trajectory=args.trajectory,
                   spacing=args.spacing, x0_clip=args.x0_clip != "static" and args.x0_clip)
    args.sampler, args.steps, args.spacing = distilled_sampling(model.distilled, args.sampler, args.steps, args.spacing,
                                                                args.guidance, args.eta, process)
    args.sampler, args.steps = sampler_and_steps(process, args.sampler, args.steps, start_noise=args.start_noise)
    check_guidance_interval_fits(process, args.guidance, args.guidance_interval)
    if args.from_test is not None and args.guidance_interval is not None:
        raise DreamdataError("--guidance-interval does not apply to --from-test (restoration guides every step)")
    if args.from_test is not None:
        return _run_restore(args, model, device)
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
    out_dir = _sample_out_dir(args, model, timesteps, classes, conditional, guide)
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
    start, start_noise = start_distribution(model, args.sampler, args.start_noise)
    images = generate(network, process, labels if conditional else None, labels.numel(), args.seed,
                      sampler=args.sampler, steps=args.steps, spacing=args.spacing, guidance_scale=args.guidance,
                      guidance_interval=args.guidance_interval,
                      batch_size=args.batch, device=device, x0_clip=args.x0_clip, progress=True,
                      indices=indices, on_step=recorder, start=start, source=model_source(model),
                      precision=args.precision, **({} if args.eta is None else {"eta": args.eta}))
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
        "x0_clip": args.x0_clip, "precision": args.precision, "guidance": args.guidance,
        "guidance_interval": None if args.guidance_interval is None else list(args.guidance_interval),
        "network_evaluations_per_sample": network_evaluations_per_sample(
            process, timesteps.numel(), args.spacing, args.guidance if conditional else 0.0, args.guidance_interval,
            autoguided=guide is not None),
        "autoguide": None if guide is None else {"checkpoint": str(guide.checkpoint), "step": guide.step,
                                                 "weight": args.autoguide_weight},
        "distilled": None if model.distilled is None else json.loads(model.distilled.to_json()),
        "seed": args.seed, "n": args.n,
        "classes": names if conditional else None, "class_indices": classes if conditional else None,
        "sample_index": "k * num_classes + class (k = position within the class)",
        "batch": args.batch, "device": str(device), "trajectory": args.trajectory,
        "forward_strip": args.forward_strip, "start_noise": start_noise,
        "files": files, "dreamdata": __version__, "torch": torch.__version__,
    }
    write_text_atomic(out_dir / "sample.json", finite_dumps(record, indent=2) + "\n")
    print(f"wrote {len(images)} samples to {out_dir} "
          f"(rows: {', '.join(names)}; {', '.join(files)}, <class>/<k>.png, sample.json)")
    return 0


def _run_restore(args, model, device) -> int:
    """``--from-test N``: degrade test images to the last step, restore them, write grids and scores."""
    import torch

    from dreamdata import __version__
    from dreamdata.atomic import atomic_path, write_text_atomic
    from dreamdata.finite_json import dumps as finite_dumps
    from dreamdata.data import load_dataset
    from dreamdata.sampling.generate import check_finite, model_source
    from dreamdata.sampling.saving import to_uint8, uint8_grid, write_png
    from dreamdata.sampling.restore import degrade_and_restore, restoration_scores

    check_positive(from_test=args.from_test)
    test = load_dataset(model.config.data, "test")
    count = min(args.from_test, len(test))
    clean = test.images[:count].float().div(127.5).sub(1.0)
    conditional = int(getattr(model.network, "num_classes", 0)) > 0
    labels = test.labels[:count] if conditional else None
    degraded, restored = degrade_and_restore(model.network, model.process, clean, labels, args.sampler, args.steps,
                                             args.seed, batch_size=args.batch, device=device, x0_clip=args.x0_clip,
                                             guidance_scale=args.guidance if conditional else 0.0)
    check_finite(restored, model_source(model), model.network, what=f"restoring ({args.sampler})")
    scores = restoration_scores(restored, clean)
    if args.out:
        out_dir = Path(args.out).expanduser()
    else:
        steps = min(args.steps, model.process.num_steps)
        name = f"restore-{args.sampler}-{steps}steps-seed{args.seed}-step{model.step}"
        out_dir = model.checkpoint.parent.parent / "samples" / name.replace("+", "p")
    shown = min(count, 16)
    for file, images in (("originals.png", clean), ("degraded.png", degraded), ("restored.png", restored)):
        write_png(uint8_grid(images[:64], nrow=min(count, 16)), out_dir / file)
    triple = torch.cat([clean[:shown], degraded[:shown], restored[:shown]])
    write_png(uint8_grid(triple, nrow=shown), out_dir / "restoration.png")
    with atomic_path(out_dir / "restoration.npz") as temporary:
        with open(temporary, "wb") as file:
            import numpy as np

            np.savez(file, **{key: to_uint8(value).permute(0, 2, 3, 1).numpy() for key, value in
                              (("originals", clean), ("degraded", degraded), ("restored", restored))},
                     labels=test.labels[:count].numpy())
    record = {"command": "sample --from-test", "run": str(model.checkpoint.parent.parent),
              "checkpoint": str(model.checkpoint), "step": model.step, "sampler": args.sampler,
              "steps": min(args.steps, model.process.num_steps), "test_images": count, "seed": args.seed,
              "conditional_labels": conditional, "scores": scores, "dreamdata": __version__}
    write_text_atomic(out_dir / "sample.json", finite_dumps(record, indent=2) + "\n")
    print(f"restored {count} degraded test images into {out_dir}: RMSE {scores['rmse']:.4f}, "
          f"PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f} (restoration.png: original / degraded / restored)")
    return 0
