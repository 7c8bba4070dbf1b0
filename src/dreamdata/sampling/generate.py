"""Many samples from a trained model, batched, with per-sample seeding.

:func:`generate` is what ``dreamdata sample`` (and anything that dreams up a data set) calls: it splits
``count`` samples into batches of ``batch_size``, runs the chosen sampler (see
:func:`dreamdata.sampling.get_sampler`) on each batch, and returns the images in ``[-1, 1]``.

Reproducibility: every sample draws all its randomness - its starting noise ``x_T`` and any noise a
stochastic sampler adds along the way - from its own generator, seeded from ``(seed, index)`` where
``index`` is the sample's *global index* (``start_index + k`` for the ``k``-th sample, or an explicit
``indices[k]``). So the same ``seed`` gives the same image for a given index whatever the batch size,
the number of samples asked for alongside it, or the order the batches run in (see
:class:`dreamdata.process.rng.PerSampleGenerator`).

What is exactly the same is the randomness: a sample's noise, bit for bit. The network's arithmetic on
it can still depend on the batch in the last float bit: matrix-product libraries (MKL on the CPU,
cuBLAS/cuDNN on a GPU) pick kernels by matrix shape, and a row's rounding can depend on how many rows
share the call and where it sits among them (MKL's sgemm, for one, rounds a 1-3-row product differently
from a 4-row one). So two batch sizes give images equal to float rounding (~1e-6 in ``[-1, 1]``,
invisible; at most a rare 1-level difference once quantised to uint8), and bit-identical images whenever
the network's arithmetic is itself batch-independent.

Turning the samples into saved pixels and files (PNGs, grids, ``samples.npz``) is
:mod:`dreamdata.sampling.saving`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from dreamdata.errors import DreamdataError
from dreamdata.process.rng import START_STREAM, PerSampleGenerator, per_sample_noise
from dreamdata.sampling.guidance import check_guidance_interval, step_guidance_scales
from dreamdata.sampling.precision import in_precision
from dreamdata.sampling.registry import get_sampler
from dreamdata.sampling.timesteps import SEARCHED, timestep_sequence

__all__ = [
    "NonFiniteSamplesError",
    "TrajectoryRecorder",
    "check_finite",
    "UnknownClassError",
    "generate",
    "model_source",
    "network_evaluations_per_sample",
    "resolve_classes",
    "sampling_timesteps",
]

# on_step(indices, i, t, x_t, x0_hat): indices are the global sample indices of the batch's rows.
StepHook = Callable[[torch.Tensor, int, int, torch.Tensor, torch.Tensor], None]
# start(generator, (C, H, W), device) -> the batch's starting states [B, C, H, W] (generate's ``start``).
StartSampler = Callable[[PerSampleGenerator, tuple, torch.device], torch.Tensor]


class NonFiniteSamplesError(DreamdataError):
    """Sampling produced NaN or inf. Such images would be written as flat grey (NaN) or saturated (inf)
    pixels that look like data, so nothing is written."""


def model_source(model) -> str:
    """How an error names a loaded run (:class:`~dreamdata.training.pretrained.TrainedModel`): the run
    directory and the training step of its checkpoint."""
    checkpoint = Path(model.checkpoint)
    if checkpoint.parent.name == "checkpoints":  # RUN/checkpoints/step-N.safetensors
        return f"run {checkpoint.parent.parent}, checkpoint step {model.step} ({checkpoint.name})"
    return f"checkpoint {checkpoint} (step {model.step})"


def _weights_are_finite(network) -> bool:
    parameters = network.parameters() if hasattr(network, "parameters") else ()
    return all(bool(torch.isfinite(p).all()) for p in parameters)


def check_finite(images: torch.Tensor, source: Optional[str] = None, network=None, what: str = "sampling") -> None:
    """Raise :class:`NonFiniteSamplesError` naming ``source`` if ``images`` ``[N, ...]`` hold NaN or inf."""
    if images.numel() == 0:
        return
    finite = torch.isfinite(images.detach()).reshape(images.shape[0] if images.ndim > 1 else 1, -1).all(1)
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    cause = ""
    if network is not None:
        cause = (": the network's weights are NaN/inf (training diverged; sample an earlier checkpoint or "
                 "retrain with a lower train.lr)" if not _weights_are_finite(network) else
                 ": the weights are finite, so the sampler diverged (try a lower --guidance, another --sampler "
                 "or more --steps)")
    raise NonFiniteSamplesError(f"{source or 'the model'}: {what} produced NaN/inf values in {bad} of "
                                f"{len(finite)} images{cause}; nothing was written")


def sampling_timesteps(process, steps: int, spacing: str = "linspace") -> torch.Tensor:
    """The descending training indices a sampler with ``steps`` steps visits (``steps`` capped at ``T``).

    ``spacing="searched"``: the ``steps``-step grid searched for the loaded checkpoint (``dreamdata search-grid``,
    :mod:`~dreamdata.sampling.searched_grid`), which :func:`~dreamdata.training.pretrained.load_trained` puts in
    ``process.searched_grids``; any other spacing is a formula of :func:`timestep_sequence`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if spacing == SEARCHED:
        grids = getattr(process, "searched_grids", {})
        if steps not in grids:
            searched = ", ".join(str(k) for k in sorted(grids)) or "none"
            raise ValueError(f"spacing 'searched': no {steps}-step grid was searched for this checkpoint (searched: "
                             f"{searched}); run `dreamdata search-grid RUN --steps {steps}` first")
        return torch.tensor(grids[steps], dtype=torch.long)
    schedule = getattr(process, "schedule", None)
    return timestep_sequence(process.num_steps, min(steps, process.num_steps), spacing=spacing,
                             alpha_bar=getattr(schedule, "alpha_bar", None))


def network_evaluations_per_sample(process, steps: int, spacing: str = "linspace", guidance_scale: float = 0.0,
                                   guidance_interval: Optional[Sequence[float]] = None,
                                   autoguided: bool = False) -> int:
    """How many images the network sees per sample: one per step, two for each guided step (the conditional
    and unconditional halves of the doubled batch); with ``guidance_interval`` only the steps whose noise
    level lies in it are guided (see :mod:`~dreamdata.sampling.guidance`). ``autoguided``: twice that, the
    guide network seeing every image the model sees (:mod:`~dreamdata.sampling.autoguidance`)."""
    passes = 2 if autoguided else 1
    if guidance_scale == 0:
        return passes * int(steps)
    interval = check_guidance_interval(guidance_interval)
    if interval is None:
        return passes * 2 * int(steps)
    timesteps = sampling_timesteps(process, int(steps), spacing).tolist()
    scales = step_guidance_scales(process.schedule.alpha_bar, timesteps, guidance_scale, interval)
    return passes * (len(timesteps) + sum(scale != 0 for scale in scales))


def _network_device(network) -> torch.device:
    parameter = next(iter(network.parameters()), None) if hasattr(network, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def generate(network, process, class_labels: Optional[torch.Tensor], count: int, seed: int,
             sampler: str = "ddpm", steps: int = 100, spacing: str = "linspace", guidance_scale: float = 0.0,
             batch_size: int = 64, device: Optional[torch.device | str] = None, x0_clip: str = "static",
             progress: bool = True, start_index: int = 0, indices: Optional[Sequence[int] | torch.Tensor] = None,
             on_step: Optional[StepHook] = None, start: Optional[StartSampler] = None,
             source: Optional[str] = None, guidance_interval: Optional[Sequence[float]] = None,
             precision: str = "fp32", **sampler_options) -> torch.Tensor:
    """Draw ``count`` samples; returns a float32 CPU tensor ``[count, C, H, W]`` clamped to ``[-1, 1]``.

    A batch with NaN or inf raises :class:`NonFiniteSamplesError` naming ``source`` (e.g.
    :func:`model_source`: the checkpoint and its step), before anything could be written from it.

    Args:
        network: the denoiser (``in_channels``, ``image_size``, ``num_classes`` attributes); it is put in
            eval mode for the call and restored afterwards.
        process: the process it was trained with (Gaussian diffusion, or a blur for the cold samplers).
        class_labels: long ``[count]`` (class of each sample) or ``None`` for an unconditional model.
        count: number of samples.
        seed: base seed; sample ``k`` uses a generator seeded from ``(seed, start_index + k)``.
        sampler: a name from :func:`dreamdata.sampling.sampler_names` that fits ``process`` (``ddpm``,
            ``ddim``, ``dpm++2m``... for Gaussian diffusion; ``cold-improved``, ``cold-naive`` for blur).
        steps: number of sampling steps (capped at the process's ``T``).
        spacing: how the steps are spread over ``0..T-1`` (see :func:`~dreamdata.sampling.timestep_sequence`).
        guidance_scale: classifier-free guidance ``w`` (needs ``class_labels``).
        batch_size: samples per sampler call; does not change the noise (the images only up to float
            rounding, see the module docstring).
        device: where to sample; ``None`` = the network's device.
        x0_clip: how the sampler clips its ``x̂0`` (``"static"`` = to ``[-1, 1]``).
        progress: tqdm bar over samples.
        start_index: global index of the first sample (to continue a numbered series, or to redo one).
        indices: explicit global indices ``[count]`` instead of ``start_index + arange(count)``.
        on_step: called as ``on_step(indices, i, t, x_t, x0_hat)`` after each sampler step of each batch,
            with the global indices of that batch's rows.
        start: builds each batch's starting state as ``start(generator, (C, H, W), device)`` from the
            batch's per-sample start streams; ``None`` = standard normal noise (the Gaussian prior). Cold
            diffusion passes :func:`dreamdata.sampling.blur_prior.start_sampler`.
        source: what the network is, for error messages (a run's checkpoint and step).
        guidance_interval: ``(σ_lo, σ_hi)``: guide only the steps whose EDM noise level
            ``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)`` lies in ``σ_lo < σ_t ≤ σ_hi`` (Kynkäänniemi et al. 2024; the
            other steps take one conditional pass); ``None`` = every step (see
            :mod:`~dreamdata.sampling.guidance`). Gaussian samplers only.
        precision: ``fp32``, or ``bf16``: the network's evaluations under bf16 autocast, its outputs and the
            sampler's arithmetic in float32 (see :mod:`~dreamdata.sampling.precision`).
        **sampler_options: passed to the sampler (e.g. ``eta`` for DDIM).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if indices is None:
        indices = torch.arange(start_index, start_index + count, dtype=torch.long)
    else:
        indices = torch.as_tensor(indices, dtype=torch.long).flatten().cpu()
        if indices.numel() != count:
            raise ValueError(f"indices has {indices.numel()} entries for count={count}")
    num_classes = int(getattr(network, "num_classes", 0))
    if class_labels is not None:
        class_labels = torch.as_tensor(class_labels, dtype=torch.long).flatten().cpu()
        if class_labels.numel() != count:
            raise ValueError(f"class_labels has {class_labels.numel()} entries for count={count}")
        if num_classes == 0:
            raise ValueError("class_labels given, but the network is unconditional (num_classes = 0)")
        if count and (int(class_labels.min()) < 0 or int(class_labels.max()) >= num_classes):
            raise ValueError(f"class_labels must lie in 0..{num_classes - 1}, got {sorted(set(class_labels.tolist()))}")
    elif guidance_scale != 0:
        raise ValueError(f"guidance_scale={guidance_scale} needs class_labels (classifier-free guidance "
                         "mixes the conditional and unconditional outputs)")
    guidance_interval = check_guidance_interval(guidance_interval)
    evaluated = in_precision(network, precision)  # what the sampler calls; ``network`` itself for fp32
    sample_fn = get_sampler(sampler, process)
    device = torch.device(device) if device is not None else _network_device(network)
    timesteps = sampling_timesteps(process, steps, spacing).to(device)
    shape = (int(network.in_channels), int(network.image_size), int(network.image_size))
    # what one sample starts from: x_T [C, H, W] for diffusion, a GAN generator's latent code z
    start_shape = tuple(getattr(network, "start_shape", shape))
    out = torch.empty((count, *shape), dtype=torch.float32)

    was_training = getattr(network, "training", False)
    if hasattr(network, "eval"):
        network.eval()
    bar = tqdm(total=count, desc=f"sampling ({sampler}, {timesteps.numel()} steps)", unit="img",
               disable=not progress, leave=False)
    try:
        for first in range(0, count, batch_size):
            stop = min(count, first + batch_size)
            batch_indices = indices[first:stop]
            if start is None:
                noise = per_sample_noise(seed, batch_indices, start_shape, device)
            else:
                noise = start(PerSampleGenerator(seed, batch_indices, device, stream=START_STREAM), shape, device)
            generator = PerSampleGenerator(seed, batch_indices, device)
            labels = class_labels[first:stop].to(device) if class_labels is not None else None
            callback = None
            if on_step is not None:
                def callback(i, t, x_t, x0_hat, _indices=batch_indices):
                    on_step(_indices, i, t, x_t, x0_hat)
            images = sample_fn(evaluated, process, noise, timesteps, class_labels=labels,
                               guidance_scale=guidance_scale, generator=generator, x0_clip=x0_clip,
                               progress=False, callback=callback, guidance_interval=guidance_interval,
                               **sampler_options)
            check_finite(images, source, network, what=f"sampling ({sampler}, {timesteps.numel()} steps)")
            out[first:stop] = images.float().clamp(-1.0, 1.0).cpu()
            bar.update(stop - first)
    finally:
        bar.close()
        if was_training and hasattr(network, "train"):
            network.train(True)
    return out


class TrajectoryRecorder:
    """An ``on_step`` hook for :func:`generate` that keeps the reverse process of chosen samples.

    For each global sample index in ``indices`` it keeps ``x_t`` (the state at the start of the step) and
    the ``x0_hat`` predicted from it at steps ``0, every, 2 * every, ...`` and at the last step
    ``num_steps - 1``. After sampling, :meth:`stacked` gives ``(timesteps, x_t, x0_hat)`` with tensors
    ``[len(indices), K, C, H, W]`` on the CPU, in the order of ``indices``.
    """

    def __init__(self, indices: Sequence[int], every: int, num_steps: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"trajectory interval must be a positive integer, got {every!r}")
        self.indices = [int(i) for i in indices]
        self.recorded_steps = sorted(set(range(0, num_steps, every)) | {num_steps - 1})
        self.timesteps: dict[int, int] = {}
        self.x_t: dict[int, dict[int, torch.Tensor]] = {i: {} for i in self.indices}
        self.x0_hat: dict[int, dict[int, torch.Tensor]] = {i: {} for i in self.indices}

    @staticmethod
    def columns(every: int, num_steps: int) -> int:
        """How many columns (recorded steps) a trajectory every ``every`` steps of ``num_steps`` has."""
        return len(set(range(0, num_steps, every)) | {num_steps - 1})

    def __call__(self, batch_indices: torch.Tensor, i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if i not in self.recorded_steps:
            return
        self.timesteps[i] = int(t)
        for row, index in enumerate(batch_indices.tolist()):
            if index in self.x_t:
                self.x_t[index][i] = x_t[row].detach().float().cpu().clone()
                self.x0_hat[index][i] = x0_hat[row].detach().float().cpu().clone()

    def stacked(self) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        steps = self.recorded_steps
        missing = [index for index in self.indices if sorted(self.x_t[index]) != steps]
        if missing:
            raise RuntimeError(f"no complete trajectory was recorded for sample(s) {missing}")
        x_t = torch.stack([torch.stack([self.x_t[index][i] for i in steps]) for index in self.indices])
        x0_hat = torch.stack([torch.stack([self.x0_hat[index][i] for i in steps]) for index in self.indices])
        return [self.timesteps[i] for i in steps], x_t, x0_hat


# -- choosing which classes to sample ---------------------------------------------------------


class UnknownClassError(DreamdataError):
    """A class asked for by name or index is not one of the model's classes."""


def resolve_classes(specs: Optional[Sequence[str]], class_names: Sequence[str], allow_all: bool = True) -> list[int]:
    """Class indices for ``--class`` values: names, indices, ``all``, repeated or comma-separated.

    ``None``/empty or ``all`` anywhere means every class (unless ``allow_all`` is false, when ``all`` is
    an unknown name). Names match exactly, else case-insensitively; an integer that is not a class name
    is an index. Duplicates are dropped, first occurrence kept. Anything else raises
    :class:`UnknownClassError`, a one-line message naming it and listing the classes.
    """
    names = list(class_names)
    items = [item.strip() for spec in (specs or []) for item in str(spec).split(",") if item.strip()]
    if allow_all and (not items or any(item.lower() == "all" for item in items)):
        return list(range(len(names)))
    lowered = {}
    for index, name in enumerate(names):
        lowered.setdefault(name.lower(), index)
    chosen: list[int] = []
    for item in items:
        if item in names:
            index = names.index(item)
        elif item.lower() in lowered:
            index = lowered[item.lower()]
        elif re.fullmatch(r"[+-]?\d+", item) and 0 <= int(item) < len(names):
            index = int(item)
        else:
            known = ", ".join(f"{i}={name}" for i, name in enumerate(names))
            raise UnknownClassError(f"unknown class {item!r}; the model's classes are {known}"
                                    + (" (or 'all')" if allow_all else ""))
        if index not in chosen:
            chosen.append(index)
    return chosen
