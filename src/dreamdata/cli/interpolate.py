"""`dreamdata interpolate`: deterministic strips between two noises or two classes (DDIM for diffusion runs,
one generator pass per frame for GAN runs)."""

from __future__ import annotations

from pathlib import Path

from dreamdata.cli.arguments import add_autoguide_arguments, check_positive, guidance_scale
from dreamdata.sampling.from_run import autoguide, distilled_sampling, is_gan, load_for_sampling, refuse_for_gan
from dreamdata.errors import DreamdataError


def add_interpolate(subparsers) -> None:
    parser = subparsers.add_parser(
        "interpolate", help="a strip of deterministic DDIM samples between two seeds or two classes",
        description="Decode with deterministic DDIM (eta = 0) a strip of --frames images: between the noises of "
                    "--seed and --seed2 (slerp) for one class, or - with --to-class - from class A to class B "
                    "with the noise of --seed fixed, mixing the network outputs eps = (1-l) eps(x, A) + "
                    "l eps(x, B) (guided by --guidance on top). The noise of a seed is that of the first "
                    "image `dreamdata sample --class A --seed S` draws, so the end frames are its DDIM "
                    "samples. Same arguments, same pixels. For a GAN run the strip walks the latent codes "
                    "of the two seeds (--path slerp or linear), or keeps the code and moves the generator's "
                    "class embedding from A to B; no sampler is involved.")
    parser.add_argument("run", help="run directory or .safetensors checkpoint")
    parser.add_argument("--class", dest="class_a", metavar="A",
                        help="class name or index (not for unconditional models)")
    parser.add_argument("--to-class", dest="class_b", metavar="B", help="interpolate from class A to this class")
    parser.add_argument("--frames", type=int, default=8, help="images in the strip, ends included (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="noise of the first frame (default 0)")
    parser.add_argument("--seed2", type=int, help="noise of the last frame (default --seed + 1; not with --to-class)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50; not for a GAN run)")
    parser.add_argument("--path", choices=("slerp", "linear"), default="slerp",
                        help="how the two seeds' noises / latent codes are joined (default slerp)")
    parser.add_argument("--spacing", default=None, help="timestep spacing (default linspace; a distilled run's own)")
    parser.add_argument("--guidance", type=guidance_scale, default=0.0,
                        help="classifier-free guidance scale w >= 0 (default 0: none)")
    add_autoguide_arguments(parser, "the strip's default file name")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--out", metavar="FILE", help="output PNG (default RUN/samples/interpolate-....png)")
    parser.set_defaults(handler=_run_interpolate)


def _run_interpolate(args) -> int:
    from dreamdata.sampling.generate import check_finite, model_source, resolve_classes, sampling_timesteps
    from dreamdata.sampling.saving import uint8_grid, write_png
    from dreamdata.sampling.interpolate import interpolate_classes, interpolate_seeds

    check_positive(steps=args.steps)
    if args.frames < 2:
        raise DreamdataError(f"--frames must be at least 2, got {args.frames}")
    if args.class_b is not None and args.seed2 is not None:
        raise DreamdataError("--seed2 interpolates between noises, --to-class between classes: give one of them")
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise DreamdataError(f"--out {args.out}: the strip is a PNG; give a path ending in .png")
    model, device = load_for_sampling(args.run, args.device, use_ema=not args.no_ema)
    network, process = model.network, model.process
    from dreamdata.process import GaussianDiffusion

    gan = is_gan(process)
    refuse_for_gan(process, steps=args.steps, guidance=args.guidance, spacing=args.spacing, autoguide=args.autoguide)
    _, args.steps, args.spacing = distilled_sampling(model.distilled, None, args.steps, args.spacing, args.guidance,
                                                     None, process)
    args.steps = 1 if gan else (args.steps or 50)
    if not gan and not isinstance(process, GaussianDiffusion):
        raise DreamdataError(f"{args.run}: interpolate walks DDIM's noise space, so it needs a Gaussian diffusion "
                             f"run (or a GAN run); this run's process is {model.config.process.kind}")
    guide = None
    if args.autoguide is not None:
        network, guide = autoguide(model, args.autoguide, args.autoguide_weight, use_ema=not args.no_ema)
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
    if gan:
        return _write_gan_strip(args, model, network, class_a, class_b, seed2, index, device)
    if class_b is not None:
        frames = interpolate_classes(network, process, class_a, class_b, args.seed, **common)
        what = f"class {model.class_names[class_a]} -> {model.class_names[class_b]}, seed {args.seed}"
        name = f"interpolate-class{class_a}-to{class_b}-seed{args.seed}"
    else:
        frames = interpolate_seeds(network, process, class_a, args.seed, seed2, path=args.path, **common)
        label = model.class_names[class_a] if class_a is not None else "unconditional"
        what = f"{label}, seed {args.seed} -> {seed2}"
        name = f"interpolate-{'uncond' if class_a is None else f'class{class_a}'}-seed{args.seed}-to{seed2}"
        name += "" if args.path == "slerp" else f"-{args.path}"
    name += f"-{args.steps}steps-w{args.guidance:g}-step{model.step}"
    name += ("" if guide is None else f"-ag{args.autoguide_weight:g}-step{guide.step}") + ".png"
    out = Path(args.out).expanduser() if args.out else model.checkpoint.parent.parent / "samples" / name
    check_finite(frames, model_source(model), network, what=f"DDIM interpolation ({args.steps} steps)")
    write_png(uint8_grid(frames, nrow=args.frames), out)
    guided = "" if guide is None else f", autoguided by {guide.checkpoint.name} at w={args.autoguide_weight:g}"
    print(f"wrote {out} ({args.frames} frames, {what}, DDIM {args.steps} steps, w={args.guidance:g}{guided})")
    return 0




def _write_gan_strip(args, model, generator, class_a, class_b, seed2: int, index: int, device) -> int:
    """A GAN run's strip: latent codes of two seeds (slerp/linear), or one code from class A to class B."""
    from dreamdata.sampling.generate import check_finite, model_source
    from dreamdata.sampling.saving import uint8_grid, write_png
    from dreamdata.sampling.interpolate import interpolate_generator_classes, interpolate_latents

    if class_b is not None:
        frames = interpolate_generator_classes(generator, class_a, class_b, args.seed, args.frames,
                                               device=device, index=index)
        what = f"class {model.class_names[class_a]} -> {model.class_names[class_b]}, seed {args.seed}"
        name = f"interpolate-class{class_a}-to{class_b}-seed{args.seed}"
    else:
        frames = interpolate_latents(generator, class_a, args.seed, seed2, args.frames, path=args.path,
                                     device=device, index=index)
        label = model.class_names[class_a] if class_a is not None else "unconditional"
        what = f"{label}, latent code of seed {args.seed} -> {seed2} ({args.path})"
        name = (f"interpolate-{'uncond' if class_a is None else f'class{class_a}'}-seed{args.seed}-to{seed2}-"
                f"{args.path}")
    out = (Path(args.out).expanduser() if args.out else
           model.checkpoint.parent.parent / "samples" / f"{name}-gan-step{model.step}.png")
    check_finite(frames, model_source(model), generator, what="the GAN interpolation")
    write_png(uint8_grid(frames, nrow=args.frames), out)
    print(f"wrote {out} ({args.frames} frames, {what}, one generator pass per frame)")
    return 0
