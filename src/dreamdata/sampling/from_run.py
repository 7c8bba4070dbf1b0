"""A trained run, ready to sample: the one place that loads a run for ``sample``, ``evaluate``,
``interpolate``, ``dream`` and the sweep, and settles the sampler, its steps and its start distribution.

The network and process themselves are rebuilt by :func:`dreamdata.training.pretrained.load_trained`;
this module adds what every sampling command needs on top of that: the device, user errors
(:class:`~dreamdata.errors.DreamdataError`) for a sampler that does not fit the process, each process's
default sampler and step count, a distilled run's one sampler (:func:`distilled_sampling`), the guide of
autoguided sampling (:func:`autoguide`), and cold diffusion's start distribution (the run's saved blur prior).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch

from dreamdata.errors import DreamdataError
from dreamdata.training.pretrained import TrainedModel, load_trained

__all__ = ["autoguide", "check_guidance_interval_fits", "check_sampler", "distilled_sampling", "is_gan",
           "load_for_sampling", "refuse_for_gan", "run_directory", "run_distilled_sampler", "sampler_and_steps",
           "start_distribution"]


def load_for_sampling(run: str | Path, device: str = "auto", use_ema: bool = True, local_rank: int = 0
                      ) -> tuple[TrainedModel, torch.device]:
    """The run's latest checkpoint (or the given ``.safetensors``), in eval mode on the resolved device
    (``auto``: this process's GPU under ``torchrun`` - ``local_rank`` - or the CPU)."""
    from dreamdata.training.setup import resolve_device

    resolved = resolve_device(device, local_rank)
    return load_trained(run, use_ema=use_ema, device=resolved), resolved


def autoguide(model: TrainedModel, guide: str | Path | int, weight: float, use_ema: bool = True,
              option: str = "--autoguide") -> tuple[torch.nn.Module, TrainedModel]:
    """``(network, guide_model)``: ``model``'s network autoguided with weight ``w`` by ``guide`` (Karras et al.
    2024, :mod:`~dreamdata.sampling.autoguidance`), and the loaded guide (for the records).

    ``guide`` is a training step of the model's own run (``500``: ``RUN/checkpoints/step-000000500``), a run
    directory (its latest checkpoint) or a ``.safetensors`` checkpoint; its EMA weights when ``use_ema``, like
    the model's. A :class:`DreamdataError` names ``option`` and the value when the checkpoint is missing, is the
    model's own, or cannot guide it (another schedule, parameterisation, image shape or class count)."""
    from dreamdata.sampling.autoguidance import AutoguidedNetwork, guide_mismatch

    if not weight > 0:
        raise DreamdataError(f"{option}-weight {weight:g}: expected a weight w > 0 (the guided output is "
                             "(1 + w) D_model - w D_guide)")
    text = str(guide)
    if text.isdigit():
        folder = run_directory(model) / "checkpoints"
        path = folder / f"step-{int(text):09d}.safetensors"
        if not path.is_file():
            steps = sorted(int(p.name.split("-")[1].split(".")[0]) for p in folder.glob("step-*.safetensors"))
            raise DreamdataError(f"{option} {text}: the run {run_directory(model)} has no checkpoint at step {text} "
                                 f"(it has: {', '.join(map(str, steps)) or 'none'}; keep one with "
                                 "train.keep_steps, or more with train.checkpoint_every and "
                                 "train.keep_checkpoints: 0)")
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise DreamdataError(f"{option} {text}: no such run directory or checkpoint")
    guide_model = load_trained(path, use_ema=use_ema, device=next(model.network.parameters()).device)
    if guide_model.checkpoint.resolve() == model.checkpoint.resolve():
        raise DreamdataError(f"{option} {text}: that is the model's own checkpoint, which guides nothing "
                             "(give a weaker one: an earlier step of the run, or a smaller run)")
    mismatch = guide_mismatch(model, guide_model)
    if mismatch is not None:
        raise DreamdataError(f"{option} {text}: cannot guide {model.checkpoint}: {mismatch}")
    return AutoguidedNetwork(model.network, guide_model.network, weight), guide_model


def run_directory(model: TrainedModel) -> Path:
    """The run directory a loaded checkpoint belongs to (``RUN/checkpoints/step-*.safetensors``)."""
    return model.checkpoint.parent.parent


def check_sampler(name: str, process=None) -> None:
    """``name`` is a sampler that fits ``process`` (any known sampler when ``process`` is None)."""
    from dreamdata.sampling import get_sampler

    try:
        get_sampler(name, process)
    except ValueError as error:
        raise DreamdataError(f"--sampler {name!r}: {error}") from None


def is_gan(process) -> bool:
    """Whether ``process`` is a GAN's adversarial objective (sampled in one generator pass)."""
    from dreamdata.gan.process import AdversarialProcess

    return isinstance(process, AdversarialProcess)


def refuse_for_gan(process, **given) -> None:
    """For a GAN run, a :class:`DreamdataError` naming the first diffusion-only option the user gave
    (``given``: option name -> value, where None, False and 0 mean "not given"). Nothing for other runs."""
    if not is_gan(process):
        return
    for name, value in given.items():
        if value is not None and value is not False and value != 0:
            option = "--" + name.replace("_", "-")
            raise DreamdataError(f"{option}: this is a GAN run, which samples in one generator pass "
                                 f"(x = G(z, y)); {option} applies to diffusion runs only")


def check_guidance_interval_fits(process, guidance: float, interval, option: str = "--guidance-interval") -> None:
    """A :class:`DreamdataError` for a guidance interval that cannot apply: without guidance (``w = 0``) or for
    a process without Gaussian noise levels (blur); ``interval=None`` always fits, and ``process=None`` checks
    only the guidance (before a model is loaded). A GAN run is refused by :func:`refuse_for_gan`."""
    if interval is None:
        return
    shown = ",".join(f"{value:g}" for value in interval)
    if guidance == 0:
        raise DreamdataError(f"{option} {shown}: says at which noise levels to apply guidance, but the guidance "
                             "scale is 0 (give --guidance w > 0, or drop the interval)")
    if process is not None and getattr(getattr(process, "schedule", None), "alpha_bar", None) is None:
        raise DreamdataError(f"{option} {shown}: the interval is in Gaussian noise levels sigma, and this "
                             f"run's process ({type(process).__name__}) has none")


def distilled_sampling(distilled, sampler: Optional[str], steps: Optional[int], spacing: Optional[str],
                       guidance: float = 0.0, eta: Optional[float] = None, process=None, where: str = ""
                       ) -> tuple[Optional[str], Optional[int], str]:
    """``(sampler, steps, spacing)`` for a run whose checkpoint records ``distilled`` (a
    :class:`~dreamdata.distill.record.DistilledSampler`, or None): the recorded DDIM sampler, step count and
    grid when not given, and a :class:`DreamdataError` when a given one differs, when ``guidance`` is not 0
    or ``eta`` not 0. For any other run: the given values, the spacing defaulting to ``linspace``.

    An error rather than a warning: a distilled student was trained only to jump between the points of its
    grid (and with its guidance baked in), so on any other grid or sampler it is no longer a denoiser, and
    the images, plausible-looking but neither the teacher's nor the student's, would go on into FID tables
    and dreamed data sets. ``where`` prefixes the message (a sweep names its arm and checkpoint). With
    ``process``, the recorded grid is checked to be the one the samplers will visit (``steps`` on the
    ``trailing`` spacing of its ``T``).
    """
    if distilled is None:
        return sampler, steps, spacing or "linspace"
    if process is not None:
        from dreamdata.errors import CheckpointError
        from dreamdata.sampling.timesteps import timestep_sequence

        visited = timestep_sequence(process.num_steps, distilled.steps, distilled.spacing).tolist()
        if visited != list(distilled.timesteps):
            raise CheckpointError(f"{where}the checkpoint is distilled for the grid {list(distilled.timesteps)}, but "
                                  f"{distilled.steps} {distilled.spacing} steps of T = {process.num_steps} visit "
                                  f"{visited}")
    asked = (("--sampler", sampler, distilled.sampler), ("--steps", steps, distilled.steps),
             ("--spacing", spacing, distilled.spacing))
    for option, given, recorded in asked:
        if given is not None and given != recorded:
            raise DreamdataError(f"{where}{option} {given}: this checkpoint is progressively distilled for "
                                 f"{distilled.describe()}; it samples with that sampler only (drop {option}, or "
                                 "sample the teacher run)")
    if guidance != 0:
        raise DreamdataError(f"{where}--guidance {guidance:g}: this checkpoint is progressively distilled with "
                             f"guidance w = {distilled.guidance:g} baked in (dreamdata distill --guidance); sample "
                             "it with --guidance 0, the default")
    if eta is not None and eta != 0:
        raise DreamdataError(f"{where}--eta {eta:g}: this checkpoint is distilled for deterministic DDIM (eta = 0)")
    return distilled.sampler, distilled.steps, distilled.spacing


def run_distilled_sampler(run_dir: str | Path):
    """The distilled-sampler record of a run's newest checkpoint (None if it has none, or no checkpoint yet)."""
    from dreamdata.distill.record import read_distilled
    from dreamdata.training import checkpoint as ckpt

    loaded = ckpt.load_latest(Path(run_dir), report=False)
    return None if loaded is None else read_distilled(loaded.weights.metadata, loaded.path)


def sampler_and_steps(process, sampler: Optional[str], steps: Optional[int], gaussian_steps: int = 100,
                      start_noise: Optional[float] = None) -> tuple[str, int]:
    """The sampler and step count to use: the given ones, else the process's defaults (ancestral DDPM with
    ``gaussian_steps`` for Gaussian diffusion; cold-improved over every step ``T`` for blur; the single
    generator pass ``gan`` for a GAN).

    Raises :class:`DreamdataError` when the sampler does not fit the process, when steps are given for a
    GAN, or when a ``start_noise`` is given for a process that starts from ``N(0, I)``.
    """
    from dreamdata.sampling import default_sampler

    if is_gan(process):
        refuse_for_gan(process, steps=steps, start_noise=start_noise)
        if sampler is not None:
            check_sampler(sampler, process)
        return "gan", 1
    cold = default_sampler(process).startswith("cold")
    sampler = sampler or default_sampler(process)
    check_sampler(sampler, process)
    if steps is None:
        steps = process.num_steps if cold else gaussian_steps
    if start_noise is not None and not cold:
        raise DreamdataError("--start-noise applies to blur (cold diffusion) runs only")
    if start_noise is not None and not start_noise >= 0:
        raise DreamdataError(f"--start-noise must be >= 0, got {start_noise:g}")
    return sampler, steps


def start_distribution(model: TrainedModel, sampler: str, start_noise: Optional[float] = None):
    """``(start, noise)``: cold diffusion's start sampler (flat images from the run's blur prior plus noise of
    std ``start_noise``, default the run's ``process.blur_start_noise``) and that std; ``(None, None)`` for
    the Gaussian samplers, which start from ``N(0, I)``."""
    from dreamdata.sampling.blur_prior import PRIOR_FILE, prior_for_run, start_sampler

    if not sampler.startswith("cold"):
        return None, None
    run_dir = run_directory(model)
    if not (run_dir / PRIOR_FILE).is_file():
        print(f"dreamdata: {run_dir / PRIOR_FILE} not found (training did not finish); fitting the start "
              "distribution to the run's training data", file=sys.stderr)
    prior = prior_for_run(model.process, model.config, run_dir)
    noise = model.config.process.blur_start_noise if start_noise is None else start_noise
    return start_sampler(prior, noise), noise
