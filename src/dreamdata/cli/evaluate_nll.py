"""`dreamdata evaluate RUN --nll`: the variational bound of a Gaussian run in bits/dim on its test split.

The computation lives in :mod:`dreamdata.evaluation.likelihood` and the figure in
:mod:`dreamdata.reports.likelihood`; this module checks the options, loads the run and the test images, and
writes ``nll.json`` and ``nll.png`` (atomically) into the evaluation directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dreamdata.errors import DreamdataError

__all__ = ["run_nll"]

# options of the sample metrics that mean nothing for the bound: refused rather than silently ignored
_SAMPLE_OPTIONS = (("sampler", None), ("steps", None), ("guidance", 0.0), ("reconstruction", False),
                   ("clip_model", None), ("start_noise", None), ("spacing", None))


def _run_labels(model, reference):
    """The test labels as the run's class indices (by class name), or None for an unconditional network."""
    import torch

    if int(getattr(model.network, "num_classes", 0)) == 0 or reference.labels is None:
        return None
    lacking = sorted({name for name in reference.class_names if name not in model.class_names})
    if lacking:
        raise DreamdataError(f"--nll: the test images have class(es) {', '.join(map(repr, lacking))}, which the run "
                             f"was not trained on (it has {', '.join(model.class_names)})")
    mapping = torch.tensor([model.class_names.index(name) for name in reference.class_names], dtype=torch.long)
    return mapping[reference.labels.long()]


def _format(result: dict) -> str:
    def row(name: str, key: str) -> str:
        return f"  {name:<24}{result[key]:.4f} ± {result[key + '_stderr']:.4f} bits/dim"

    kind = f"strided estimate, {result['nll_steps']} of {result['num_steps'] - 1} KL terms" if result["estimate"] \
        else "all terms"
    return "\n".join([f"  variational bound ({kind}, N={result['n']}, T={result['num_steps']}, "
                      f"variance {result['variance']})",
                      row("NLL bound (total)", "bits_per_dim"), row("L_T  prior KL", "prior_bpd"),
                      row("sum L_t  KL terms", "kl_sum_bpd"), row("L_0  decoder", "decoder_bpd")])


def run_nll(args) -> int:
    """The ``--nll`` branch of ``dreamdata evaluate`` (``args`` as its parser leaves them)."""
    import torch

    from dreamdata import __version__
    from dreamdata.atomic import write_text_atomic
    from dreamdata.cli.evaluate import _check_run_fits_reference, _reference_data
    from dreamdata.evaluation.likelihood import nll_bits_per_dim, nll_folder_name
    from dreamdata.evaluation.sources import load_reference
    from dreamdata.finite_json import dumps as finite_dumps
    from dreamdata.reports.likelihood import plot_vlb_terms
    from dreamdata.sampling.from_run import load_for_sampling

    target = Path(args.target).expanduser()
    if not ((target / "config.yaml").is_file() or target.suffix == ".safetensors"):
        raise DreamdataError(f"--nll needs a run directory (it scores test images with the model); {target} is not one")
    for name, default in _SAMPLE_OPTIONS:
        if getattr(args, name) != default:
            raise DreamdataError(f"--{name.replace('_', '-')}: --nll scores test images under the model's bound and "
                                 "draws no samples; leave it out")
    model, device = load_for_sampling(target, args.device, use_ema=not args.no_ema)
    kind = model.config.process.kind
    if kind != "gaussian":
        raise DreamdataError(f"--nll: {target} is a process.kind={kind} run; the variational bound in bits/dim is "
                             "defined for Gaussian diffusion runs (process.kind=gaussian) only")
    reference = load_reference(_reference_data(args, model.config.data), args.ref_split, args.n, seed=args.seed)
    _check_run_fits_reference(model, reference, per_class=False)
    print(f"test images: {reference.source}")
    labels = _run_labels(model, reference)
    result = nll_bits_per_dim(model.network, model.process, reference.images, labels, nll_steps=args.nll_steps,
                              seed=args.seed, batch_size=args.batch, device=device, progress=sys.stderr.isatty())
    if result["estimate"]:
        print(f"dreamdata evaluate: note: {result['note']}: an estimate of the bound", file=sys.stderr)
    result.update({"command": "evaluate --nll", "target": str(target), "checkpoint": str(model.checkpoint),
                   "step": model.step, "reference": reference.source, "split": args.ref_split,
                   "weights": "raw" if args.no_ema else "ema", "device": str(device), "dreamdata": __version__,
                   "torch": torch.__version__})
    folder = nll_folder_name(args.nll_steps, model.process.num_steps, args.n, args.seed, model.step)
    out = Path(args.out) if args.out else model.checkpoint.parent.parent / "eval" / folder / "nll.json"
    write_text_atomic(out, finite_dumps(result, indent=2) + "\n")
    figure = plot_vlb_terms(result, out.with_suffix(".png"))
    print(_format(result))
    print(f"wrote {out} and {figure}")
    return 0
