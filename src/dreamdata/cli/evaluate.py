"""`dreamdata evaluate`: FID, KID, IS, precision/recall (and per-class FID) of a run or a set of samples; or,
with ``--nll``, a Gaussian run's variational bound in bits/dim on its test split."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from dreamdata.cli.arguments import add_autoguide_arguments, guidance_scale, non_negative_float
from dreamdata.errors import DreamdataError

DEFAULT_N = 10_000
DEFAULT_NLL_N = 1_000


def add_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="FID, KID, IS, precision/recall of a run's samples (or of a samples folder/npz)",
        description="Evaluate generated images against a reference split with one protocol: uint8 images, "
                    "grayscale repeated to 3 channels, bilinear resize to 299 without antialiasing, Inception-v3 "
                    "with the 2015-12-05 TF FID weights (a local TorchScript file via --fid-weights or "
                    "$DREAMDATA_FID_WEIGHTS, otherwise torch-fidelity's download). Features are cached under "
                    "a hash of the pixels, so a reference split is only ever processed once. Writes "
                    "metrics.json and prints a table.")
    parser.add_argument("target", help="run directory (samples are drawn from it), or samples.npz / a directory "
                                       "holding one / an image folder with one sub-folder per class")
    parser.add_argument("--ref", help="reference dataset spec (default: the run's dataset; required for samples)")
    parser.add_argument("--ref-split", default="test", help="reference split: test (default) or train")
    parser.add_argument("--ref-set", action="append", default=[], metavar="KEY=VALUE",
                        help="data option of the reference, e.g. pad_to=32 or channels=3 (repeatable; a run's "
                             "own data options are the default)")
    parser.add_argument("--n", type=int, default=None,
                        help=f"samples to evaluate (default {DEFAULT_N:,}; a samples set is subsampled to N); with "
                             f"--nll, test images (default {DEFAULT_NLL_N:,})")
    parser.add_argument("--ref-n", type=int, help="reference images (default: N, capped at the split's size)")
    parser.add_argument("--metrics", default="fid,kid,is,pr", help="comma-separated: fid, kid, is, pr")
    parser.add_argument("--no-per-class", action="store_true", help="skip the per-class FID")
    parser.add_argument("--fid-weights", help="local TorchScript Inception-v3 (default $DREAMDATA_FID_WEIGHTS)")
    parser.add_argument("--sampler", help="sampler for a run (default ddim; cold-improved for blur runs)")
    parser.add_argument("--steps", type=int, help="sampling steps for a run (default 50; every step T for blur runs)")
    parser.add_argument("--start-noise", type=non_negative_float, default=None, metavar="STD",
                        help="blur runs: std of the noise added to the flat start image (default: the run's own)")
    parser.add_argument("--spacing", default=None, help="timestep spacing (default linspace; a distilled run's own)")
    parser.add_argument("--guidance", type=guidance_scale, default=0.0, help="classifier-free guidance w (default 0)")
    add_autoguide_arguments(parser, "metrics.json")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; also seeds KID/IS subsets")
    parser.add_argument("--batch", type=int, default=256, help="sampling batch (default 256)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-ema", action="store_true", help="sample with the raw weights instead of the EMA")
    parser.add_argument("--reconstruction", action="store_true",
                        help="also noise test images to t and denoise back: RMSE/SSIM/PSNR and eps-MSE per t bucket")
    parser.add_argument("--clip-model", help="also CLIP score per class with this open_clip/transformers model")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--nll", action="store_true",
                        help="instead of sample metrics: the variational bound (negative log-likelihood) in bits/dim "
                             "on the test split, with L_T, sum L_t and L_0 apart; writes nll.json and nll.png "
                             "(Gaussian runs, any variance)")
    parser.add_argument("--nll-steps", type=int, metavar="K",
                        help="with --nll: evaluate the T-1 KL terms at K evenly spaced t and scale their sum by "
                             "(T-1)/K - an estimate, not the bound (default: all T-1)")
    parser.add_argument("--out", help="metrics.json path (default RUN/eval/<settings>/metrics.json or next to "
                                      "the samples)")
    parser.set_defaults(handler=_run_evaluate)


def _reference_data(args, run_data):
    """The run's data options (or the defaults), with ``--ref`` and each ``--ref-set KEY=VALUE`` applied and
    type-checked like a config override."""
    import dataclasses

    from dreamdata.config import DataConfig, build_dataclass, parse_override
    from dreamdata.evaluation.sources import reference_config

    if run_data is None and not args.ref:
        raise DreamdataError("--ref DATASET is needed to evaluate a samples set (e.g. --ref fashion-mnist "
                             "--ref-set pad_to=32)")
    values = dataclasses.asdict(reference_config(run_data or DataConfig(), args.ref))
    for item in args.ref_set:
        key, value = parse_override(item)
        if key not in values:
            raise DreamdataError(f"--ref-set {item!r}: unknown data option {key!r}; known: "
                                 f"{', '.join(sorted(values))}")
        values[key] = value
    return build_dataclass(DataConfig, values, "--ref-set ")


def _check_run_fits_reference(model, reference, per_class: bool) -> None:
    """What evaluate_images would refuse after sampling, refused before it: other image shapes, or (for the
    per-class FID) classes the reference lacks."""
    from dreamdata.evaluation.suite import check_reference_classes

    network = model.network
    shape = (int(network.in_channels), int(network.image_size), int(network.image_size))
    if tuple(reference.images.shape[1:]) != shape:
        r = reference.images.shape[1:]
        raise DreamdataError(f"{model.checkpoint.parent.parent}: the run makes {shape[0]}x{shape[1]}x{shape[2]} "
                             f"(CxHxW) images but the reference ({reference.source}) is {r[0]}x{r[1]}x{r[2]}; "
                             "evaluate against data prepared the same way (--ref-set pad_to= / image_size= / "
                             "channels=)")
    if per_class and int(getattr(network, "num_classes", 0)) > 0:
        check_reference_classes(model.class_names, reference)


def _format_table(result: dict) -> str:
    rows = [("N samples / reference", f"{result['n_samples']:,} / {result['n_reference']:,}")]
    if "fid" in result:
        rows.append(("FID", f"{result['fid']:.3f}"))
    if "kid_mean" in result:
        rows.append(("KID", f"{result['kid_mean']:.5f} ± {result['kid_std']:.5f}"))
    if "is_mean" in result:
        rows.append(("Inception Score", f"{result['is_mean']:.3f} ± {result['is_std']:.3f}"))
    elif "inception_score_note" in result:
        rows.append(("Inception Score", "n/a (extractor has no logits)"))
    if "precision" in result:
        rows.append(("precision / recall (k=3)", f"{result['precision']:.3f} / {result['recall']:.3f}"))
    for name, value in result.get("fid_per_class", {}).items():
        rows.append((f"FID [{name}]", f"{value:.3f}"))
    for name, value in result.get("clip_score_per_class", {}).items():
        rows.append((f"CLIP score [{name}]", f"{value:.2f}"))
    for bucket in result.get("reconstruction", {}).get("buckets", []):
        rows.append((f"recon t∈[{bucket['t_low']},{bucket['t_high']}]",
                     (f"RMSE {bucket['rmse']:.4f}  SSIM {bucket['ssim']:.4f}  PSNR {bucket['psnr']:.2f}  "
                      f"eps-MSE {bucket['eps_mse']:.4f}")))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def _run_evaluate(args) -> int:
    import time

    import torch

    from dreamdata import __version__
    from dreamdata.atomic import write_text_atomic
    from dreamdata.cli.arguments import check_positive
    from dreamdata.sampling.from_run import (autoguide, distilled_sampling, load_for_sampling, refuse_for_gan,
                                             sampler_and_steps, start_distribution)
    from dreamdata.evaluation.extractor import resolve_extractor
    from dreamdata.finite_json import dumps as finite_dumps
    from dreamdata.evaluation.sources import load_reference, load_sample_set
    from dreamdata.evaluation.suite import EvaluationOptions, ImageSet, evaluate_images, subsample
    from dreamdata.sampling.generate import model_source
    from dreamdata.training.setup import resolve_device

    if args.n is None:
        args.n = DEFAULT_NLL_N if args.nll else DEFAULT_N
    check_positive(n=args.n, ref_n=args.ref_n, steps=args.steps, batch=args.batch, nll_steps=args.nll_steps)
    if args.nll:
        from dreamdata.cli.evaluate_nll import run_nll

        return run_nll(args)
    if args.nll_steps is not None:
        raise DreamdataError("--nll-steps applies with --nll only")
    metrics = [name.strip() for name in args.metrics.split(",") if name.strip()]
    bad = [name for name in metrics if name not in ("fid", "kid", "is", "pr")]
    if bad or not metrics:
        raise DreamdataError(f"--metrics {args.metrics!r}: expected a comma-separated subset of fid, kid, is, pr")
    target = Path(args.target).expanduser()
    is_run = (target / "config.yaml").is_file() or target.suffix == ".safetensors"
    device = resolve_device(args.device)
    extractor = resolve_extractor(args.fid_weights, device=device)  # fail fast, before sampling
    model, guide = None, None
    if args.autoguide is not None and not is_run:
        raise DreamdataError(f"--autoguide {args.autoguide}: guides the sampling of a run; {target} is a set of "
                             "samples")
    if is_run:
        model, device = load_for_sampling(target, args.device, use_ema=not args.no_ema)
        refuse_for_gan(model.process, spacing=args.spacing, autoguide=args.autoguide)
        if args.autoguide is not None:
            model.network, guide = autoguide(model, args.autoguide, args.autoguide_weight, use_ema=not args.no_ema)
        args.sampler, args.steps, args.spacing = distilled_sampling(model.distilled, args.sampler, args.steps,
                                                                    args.spacing, args.guidance, None, model.process)
        if model.config.process.kind == "gaussian":  # evaluation defaults: 50-step DDIM, as the FID benchmarks
            args.sampler, args.steps = args.sampler or "ddim", args.steps or 50
        refuse_for_gan(model.process, guidance=args.guidance, reconstruction=args.reconstruction)
        args.sampler, args.steps = sampler_and_steps(model.process, args.sampler, args.steps,
                                                     start_noise=args.start_noise)
        if args.reconstruction and model.config.process.kind != "gaussian":
            raise DreamdataError("--reconstruction noises and denoises (Gaussian runs); for a blur run use "
                                 "`dreamdata sample RUN --from-test N` (degrade and restore test images)")
        run_data = model.config.data
    else:
        if args.reconstruction:
            raise DreamdataError("--reconstruction needs a run directory (it denoises with the model)")
        run_data = None
    reference_data = _reference_data(args, run_data)
    reference = load_reference(reference_data, args.ref_split, args.ref_n or args.n)
    print(f"reference: {reference.source}")
    if len(reference) < min(args.n, 2048):
        print(f"dreamdata evaluate: warning: only {len(reference)} reference images", file=sys.stderr)

    if model is not None:
        from dreamdata.evaluation.generated import sample_for_evaluation

        _check_run_fits_reference(model, reference, per_class=not args.no_per_class and "fid" in metrics)

        start, _ = start_distribution(model, args.sampler, args.start_noise)
        sampling_started = time.perf_counter()
        samples = sample_for_evaluation(model.network, model.process, model.class_names, args.n, args.seed,
                                        args.sampler, args.steps, args.spacing, args.guidance, args.batch, device,
                                        start=start, source=model_source(model))
        sampling_seconds = time.perf_counter() - sampling_started
        out = Path(args.out) if args.out else (
            model.checkpoint.parent.parent / "eval" /
            (f"{args.sampler}-{args.steps}steps-w{args.guidance:g}-n{args.n}-seed{args.seed}-step{model.step}"
             + ("" if guide is None else f"-ag{args.autoguide_weight:g}-step{guide.step}"))
            .replace("+", "p") / "metrics.json")
    else:
        loaded = load_sample_set(target)
        images, labels = subsample(loaded.images, loaded.labels, args.n, args.seed)
        samples = ImageSet(images, labels, loaded.class_names,
                           loaded.source if len(images) == len(loaded) else f"{loaded.source}, {len(images)} used")
        out = Path(args.out) if args.out else (target if target.is_dir() else target.parent) / "metrics.json"
    print(f"samples:   {samples.source}")
    options = EvaluationOptions(per_class=not args.no_per_class, seed=args.seed, metrics=metrics,
                                use_cache=not args.no_cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_images(samples, reference, extractor, options)
    for warning in caught:
        print(f"dreamdata evaluate: warning: {warning.message}", file=sys.stderr)
    result["warnings"] = sorted({str(w.message) for w in caught})
    if args.reconstruction:
        from dreamdata.evaluation.reconstruction import reconstruction_metrics

        result["reconstruction"] = reconstruction_metrics(model.network, model.process, reference.images,
                                                          seed=args.seed, device=device)
    if args.clip_model:
        from dreamdata.evaluation.clip_score import load_clip_scorer

        scorer = load_clip_scorer(args.clip_model, device=device)
        result["clip_model"] = args.clip_model
        result["clip_score_per_class"] = scorer.per_class(samples.images, samples.labels, samples.class_names)
    result.update({"command": "evaluate", "target": str(target), "dreamdata": __version__,
                   "torch": torch.__version__})
    if model is not None:
        result.update({"checkpoint": str(model.checkpoint), "step": model.step, "sampler": args.sampler,
                       "steps": args.steps, "spacing": args.spacing, "guidance": args.guidance,
                       "seed": args.seed, "weights": "raw" if args.no_ema else "ema", "device": str(device),
                       "autoguide": None if guide is None else {"checkpoint": str(guide.checkpoint),
                                                                "step": guide.step, "weight": args.autoguide_weight},
                       "sampling_seconds": sampling_seconds, "samples_per_second": args.n / sampling_seconds})
    write_text_atomic(out, finite_dumps(result, indent=2) + "\n")
    print(_format_table(result))
    print(f"wrote {out}")
    return 0
