"""`dreamdata cold-study`: the cold-diffusion report's noise-vs-blur study, trained and scored in one command."""

from __future__ import annotations

from pathlib import Path


def add_cold_study(subparsers) -> None:
    parser = subparsers.add_parser(
        "cold-study", help="train noise-DDPM and blur (cold diffusion) arms with one network and budget; tabulate",
        description="Run a study file (e.g. benchmarks/cold-study.yaml): train every arm into OUT/runs/<arm> "
                    "(an interrupted arm resumes, a finished one is skipped), then score each on conditional "
                    "reconstructions of degraded test images (RMSE, SSIM, PSNR) and unconditional samples. "
                    "Writes OUT/table.md, OUT/results.json, OUT/<arm>/{samples,reconstructions}.png and "
                    "OUT/alpha_bar.png. KEY=VALUE overrides apply to every arm's run config "
                    "(e.g. train.steps=100), or to the scoring with an evaluation. prefix (evaluation.samples=200).")
    parser.add_argument("study", help="study YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every arm / the scoring")
    parser.add_argument("--out", required=True, help="output directory (runs, grids, table)")
    parser.add_argument("--arm", dest="arms", action="append", metavar="NAME",
                        help="run only this arm (repeatable); the table then holds every arm scored so far")
    parser.add_argument("--train-only", action="store_true", help="train the arms, score nothing")
    parser.add_argument("--dry-run", action="store_true", help="print each arm's resolved process and the scoring")
    parser.add_argument("--no-fid", action="store_true", help="leave the FID column out")
    parser.add_argument("--fid-weights", help="local TorchScript Inception (default $DREAMDATA_FID_WEIGHTS, else "
                                              "torch-fidelity's download)")
    parser.add_argument("--fid-ref-n", type=int, default=2000,
                        help="test images the unconditional samples are compared with (default 2000)")
    parser.set_defaults(handler=_run_cold_study)


def _run_cold_study(args) -> int:
    import dataclasses

    import yaml

    from dreamdata.cold_study import load_study, run_cold_study

    study = load_study(args.study, list(args.overrides))
    if args.dry_run:
        summary = {"arms": {name: {"process": dataclasses.asdict(config.process),
                                   "train": {key: getattr(config.train, key) for key in ("steps", "epochs", "minutes",
                                                                                          "batch_size", "lr")}}
                            for name, config in study.arms.items()},
                   "evaluation": dataclasses.asdict(study.evaluation)}
        print(yaml.safe_dump(summary, sort_keys=False), end="")
        return 0
    fid_of = None
    if not (args.no_fid or args.train_only):
        from dreamdata.evaluation.extractor import resolve_extractor
        from dreamdata.evaluation.scorer import reference_fid_scorer

        data = next(iter(study.arms.values())).data  # every arm trains on the same data
        fid_of = reference_fid_scorer(data, resolve_extractor(args.fid_weights), "test", args.fid_ref_n)
        print(f"FID reference: {fid_of.reference}")
    table = run_cold_study(study, Path(args.out), fid_of=fid_of, only=args.arms, train_only=args.train_only)
    if not args.train_only:
        print(table.read_text(), end="")
        print(f"wrote {table} (and results.json, <arm>/samples.png, <arm>/reconstructions.png, alpha_bar.png)")
    return 0
