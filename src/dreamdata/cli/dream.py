"""`dreamdata dream`: a labelled synthetic dataset from a trained run (resumable, shardable with torchrun)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dreamdata.cli.arguments import (add_autoguide_arguments, add_guidance_arguments, add_precision_argument,
                                     check_output_directory, finite_float)
from dreamdata.errors import DreamdataError


def add_dream(subparsers) -> None:
    parser = subparsers.add_parser(
        "dream", help="dream up a labelled dataset (image folder + npz + manifest) with a trained run",
        description="Dream --per-class images of each class with a trained class-conditional run into --out: "
                    "<class>/<k>.png (an image-folder dataset), dataset.npz and manifest.json (checkpoint hash, "
                    "sampler, steps, guidance, seed, counts, time). Images are written in chunks; re-running the "
                    "same command after an interruption finishes the set, and re-running it with a larger --per-class "
                    "grows the set (the images already dreamed are kept). Under torchrun the chunks are shared "
                    "among the processes and the dataset is the same whatever their number; on a CPU, --workers starts "
                    "local worker processes that share them the same way (auto: one per core). Image k of class c "
                    "is seeded from (--seed, k * num_classes + c), as in `dreamdata sample`. The run's images/s "
                    "and layout (processes x threads) are printed and recorded in manifest.json.")
    parser.add_argument("run", help="run directory or .safetensors checkpoint")
    parser.add_argument("--per-class", type=int, required=True, help="images per class")
    parser.add_argument("--out", required=True,
                        help="output directory (new, empty, an unfinished dream run, or one to grow)")
    parser.add_argument("--classes", action="append", metavar="NAME|INDEX|all",
                        help="class(es) to dream, repeatable or comma-separated (default all)")
    add_guidance_arguments(parser, "the manifest")
    add_autoguide_arguments(parser, "the manifest")
    parser.add_argument("--sampler", default=None,
                        help="ddpm, ddim, dpm++2m, ... (default ddim; a GAN run: gan; a distilled run: its own DDIM)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default 50, a distilled run's own; not for a GAN run)")
    parser.add_argument("--spacing", default=None, help="timestep spacing (default linspace; a distilled run's own)")
    parser.add_argument("--seed", type=int, default=0)
    add_precision_argument(parser, "the manifest")
    parser.add_argument("--batch", type=int, default=100, help="images per sampler call (default 100)")
    parser.add_argument("--chunk", type=int, default=500, help="images per chunk file, the unit of resuming "
                                                               "and of sharding (default 500)")
    parser.add_argument("--format", default="folder,npz", help="folder, npz or folder,npz (default both)")
    parser.add_argument("--keep-top", type=finite_float, metavar="FRACTION",
                        help="keep only this fraction of each class: the images --filter-classifier is most "
                             "confident belong to their class")
    parser.add_argument("--filter-classifier", metavar="PATH",
                        help="classifier .safetensors from `dreamdata classifier` (trained on real data)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", default="auto", metavar="auto|N",
                        help="CPU worker processes sharing the chunks, each with its share of the threads (default "
                             "auto: one per thread of torch's thread budget, i.e. one per core unless "
                             "OMP_NUM_THREADS says less; 1 = this process with all its threads; on a GPU, 1)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--max-chunks", type=int, help=argparse.SUPPRESS)  # tests: stop after N chunks
    parser.set_defaults(handler=_run_dream)


def build_spec(args, model, classes: list[int], guide=None):
    """The :class:`~dreamdata.dream.manifest.DreamSpec` these arguments and this model (autoguided by the loaded
    ``guide``, if any) define."""
    from dreamdata.dream.manifest import DreamSpec, file_sha256
    from dreamdata.sampling.generate import sampling_timesteps
    from dreamdata.sampling.timesteps import SEARCHED

    try:
        timesteps = sampling_timesteps(model.process, args.steps, args.spacing).tolist()
    except ValueError as error:
        raise DreamdataError(f"--spacing/--steps: {error}") from None
    steps = len(timesteps)
    return DreamSpec(
        checkpoint_sha256=file_sha256(model.checkpoint), checkpoint=str(model.checkpoint), step=model.step,
        weights="raw" if args.no_ema else "ema", class_names=list(model.class_names), classes=classes,
        per_class=args.per_class, sampler=args.sampler, steps=steps, spacing=args.spacing,
        guidance=float(args.guidance),
        guidance_interval=None if args.guidance_interval is None else [float(v) for v in args.guidance_interval],
        seed=args.seed, chunk=args.chunk, channels=int(model.network.in_channels),
        image_size=int(model.network.image_size), keep_top=args.keep_top,
        filter_classifier_sha256=file_sha256(args.filter_classifier) if args.filter_classifier else None,
        precision=None if args.precision == "fp32" else args.precision,
        searched_timesteps=timesteps if args.spacing == SEARCHED else None,
        autoguide_sha256=None if guide is None else file_sha256(guide.checkpoint),
        autoguide_checkpoint=None if guide is None else str(guide.checkpoint),
        autoguide_weight=None if guide is None else float(args.autoguide_weight))


def _throughput(result) -> str:
    """``N images in S s = R images/s (P processes x T threads)``, or that nothing was dreamed."""
    if not result.dreamed_now:
        return "no image dreamed now (the chunks were there already)"
    return (f"{result.dreamed_now} images in {result.seconds:.1f} s = {result.images_per_second:.2f} images/s "
            f"({result.layout.describe()})")


def _check_args(args) -> None:
    from dreamdata.cli.arguments import check_positive
    from dreamdata.dream.workers import parse_workers
    from dreamdata.sampling.from_run import check_guidance_interval_fits, check_sampler

    check_positive(per_class=args.per_class, steps=args.steps, batch=args.batch, chunk=args.chunk)
    args.workers = parse_workers(args.workers)
    check_guidance_interval_fits(None, args.guidance, args.guidance_interval)  # the process is checked once loaded
    if args.sampler is not None:
        check_sampler(args.sampler)
    check_output_directory(args.out)
    if (args.keep_top is None) != (args.filter_classifier is None):
        raise DreamdataError("--keep-top and --filter-classifier go together (keep the top fraction by that "
                             "classifier's confidence)")
    if args.keep_top is not None and not 0.0 < args.keep_top <= 1.0:
        raise DreamdataError(f"--keep-top must lie in (0, 1], got {args.keep_top:g}")
    if args.filter_classifier and not Path(args.filter_classifier).is_file():
        raise DreamdataError(f"--filter-classifier {args.filter_classifier}: no such file")


def _run_dream(args) -> int:
    import torch
    import torch.distributed as dist

    from dreamdata import __version__
    from dreamdata.dream.writer import dream_dataset
    from dreamdata.sampling.generate import resolve_classes
    from dreamdata.training.distributed import init_distributed, shutdown_distributed
    from dreamdata.sampling.from_run import (autoguide, check_guidance_interval_fits, distilled_sampling, is_gan,
                                             load_for_sampling, refuse_for_gan, sampler_and_steps)

    _check_args(args)
    formats = tuple(part.strip() for part in args.format.split(",") if part.strip())
    kind = "cuda" if args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    from dreamdata.dream.workers import check_workers

    check_workers(args.workers, kind, int(os.environ.get("WORLD_SIZE", "1")))  # before anything is written
    context = init_distributed(kind)
    try:
        model, device = load_for_sampling(args.run, args.device, use_ema=not args.no_ema,
                                          local_rank=context.local_rank)
        if int(getattr(model.network, "num_classes", 0)) == 0:
            raise DreamdataError(f"{args.run}: the model is unconditional; dreaming a labelled dataset needs a "
                                 "class-conditional model (model.class_conditional: true)")
        refuse_for_gan(model.process, guidance=args.guidance, guidance_interval=args.guidance_interval,
                       spacing=args.spacing, autoguide=args.autoguide)
        guide = None
        if args.autoguide is not None:
            model.network, guide = autoguide(model, args.autoguide, args.autoguide_weight, use_ema=not args.no_ema)
        args.sampler, args.steps, args.spacing = distilled_sampling(model.distilled, args.sampler, args.steps,
                                                                    args.spacing, args.guidance, None, model.process)
        check_guidance_interval_fits(model.process, args.guidance, args.guidance_interval)
        if not is_gan(model.process):  # dreaming defaults: 50-step DDIM
            args.sampler, args.steps = args.sampler or "ddim", args.steps or 50
        args.sampler, args.steps = sampler_and_steps(model.process, args.sampler, args.steps)
        classes = resolve_classes(args.classes, model.class_names)
        spec = build_spec(args, model, classes, guide)
        classifier = None
        if args.filter_classifier and context.is_main:
            from dreamdata.classify.checkpoint import load_classifier
            from dreamdata.dream.filtering import classifier_label_map

            classifier = load_classifier(args.filter_classifier, device=device)
            classifier_label_map(classifier, [model.class_names[c] for c in classes], spec.channels,
                                 spec.image_size)  # fail before dreaming, not after
        run_info = {"dreamdata": __version__, "torch": torch.__version__, "device": str(device),
                    "world_size": context.world_size, "batch": args.batch}
        try:
            result = dream_dataset(model, spec, args.out, formats=formats, context=context, batch_size=args.batch,
                                   device=device, progress=context.is_main, filter_classifier=classifier,
                                   max_chunks=args.max_chunks, run_info=run_info, workers=args.workers,
                                   barrier=dist.barrier if context.enabled else (lambda: None))
        except KeyboardInterrupt:
            if context.is_main:
                print(f"dreamdata dream: interrupted; the chunks already written to {args.out} are kept, re-run "
                      "the same command to finish", file=sys.stderr)
            raise
        if context.is_main:
            state = "complete" if result.complete else "incomplete (re-run the same command to finish)"
            print(f"dream: {result.out_dir}: {result.chunks_done}/{result.chunks_total} chunks, {state}; "
                  f"{_throughput(result)}")
            from dreamdata.reports.html import write_report_or_warn

            write_report_or_warn(result.out_dir)
    finally:
        shutdown_distributed(context)
    return 0
