"""`dreamdata distill`: progressive distillation of a trained run into a few-step DDIM sampler."""

from __future__ import annotations

from dreamdata.cli.arguments import check_output_directory, guidance_scale, positive_float


def add_distill(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill", help="progressively distil a trained run into a 1-4-step DDIM sampler (Salimans & Ho 2022)",
        description="Progressive distillation (Salimans & Ho 2022): the run's EMA weights, sampled with DDIM on a "
                    "--from-steps trailing grid, teach a student to take two of its steps in one; the student "
                    "becomes the teacher and the steps halve, round by round, down to --to-steps. Writes a run "
                    "directory (default <RUN>-distilled-<N> beside RUN) that sample, evaluate, dream, interpolate "
                    "and the sweep read like any run, sampling it with the DDIM it was distilled for. A checkpoint "
                    "ends every round; re-running the same command continues an interrupted distillation exactly.")
    parser.add_argument("run", help="the teacher: a Gaussian run directory or .safetensors checkpoint")
    parser.add_argument("--from-steps", type=int, default=None,
                        help="the first teacher's DDIM steps (default 64; a distilled run: its own)")
    parser.add_argument("--to-steps", type=int, default=4, help="the final student's steps (default 4; 1, 2, ...)")
    parser.add_argument("--steps-per-round", type=int, default=1000,
                        help="student updates per round (default 1000)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the run's train.batch_size)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="learning rate at the start of each round, annealed linearly to 0 (default: the run's "
                             "train.lr)")
    parser.add_argument("--guidance", type=guidance_scale, default=0.0,
                        help="distil the classifier-free guided teacher at this w >= 0; the student has it baked in "
                             "and samples with --guidance 0 (default 0)")
    parser.add_argument("--x0-clip", default="static",
                        help="clipping of the teacher's x0 predictions: none, static, dynamic (default static, as the "
                             "samplers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="updates between mid-round checkpoints (default: the run's train.checkpoint_every; 0: "
                             "round ends only)")
    parser.add_argument("--out", help="output run directory (default <RUN>-distilled-<N> beside RUN); an unfinished "
                                      "distillation there is continued")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_distill)


def _run_distill(args) -> int:
    from dreamdata.distill.plan import DistillOptions
    from dreamdata.distill.run import distill_run

    if args.out:
        check_output_directory(args.out)
    options = DistillOptions(from_steps=args.from_steps, to_steps=args.to_steps, steps_per_round=args.steps_per_round,
                             batch_size=args.batch, lr=args.lr, guidance=args.guidance, x0_clip=args.x0_clip,
                             seed=args.seed, checkpoint_every=args.checkpoint_every)
    result = distill_run(args.run, options, out=args.out, device=args.device, progress=not args.no_progress)
    sampler = result.distilled.describe() if result.distilled is not None else "the teacher"
    state = "complete" if result.complete else "incomplete (re-run the same command to continue)"
    print(f"distill: {result.run_dir}: {result.step} updates, {state}; samples with {sampler} "
          f"(`dreamdata sample {result.run_dir}`)")
    return 0
