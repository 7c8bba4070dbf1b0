"""Interpolations decoded with deterministic DDIM (eta = 0): between two noises, and between two classes.

DDIM with ``eta = 0`` (Song et al. 2021, sec. 4.3) maps each starting noise ``x_T`` to one image, smoothly,
so walking ``x_T`` along a path walks the images along one too.

* :func:`interpolate_seeds` - one class, two seeds: the starting noises of the two seeds (exactly the
  ``x_T`` that :func:`dreamdata.sampling.generate.generate` uses for sample ``index`` of each seed) are
  joined by spherical linear interpolation (:func:`slerp`, Shoemake 1985). Gaussian noise in ``d``
  dimensions concentrates on the sphere of radius ``sqrt(d)``; a straight line between two such points
  dips to norm ``~sqrt(d / 2)`` in the middle, a state the network never saw, while slerp keeps the norm.
* :func:`interpolate_classes` - one noise, two classes. Labels are integers fed to an embedding table,
  so there is no "class 0.3 of the way from A to B" to embed. Instead each frame mixes the network's
  *outputs* for the two classes: ``eps = (1 - lam) eps(x, c_A) + lam eps(x, c_B)``, and classifier-free
  guidance applies on top of the mixture, ``(1 + w) eps_mix - w eps(x, null)`` - i.e. the guidance
  target moves from A to B. ``lam = 0`` and ``lam = 1`` are exactly the plain (guided) samples of A and B.
  Mixing the raw output is the same as mixing epsilon for x0- and v-parameterised networks too, since
  each is an affine function of epsilon at fixed ``(x, t)`` and the weights sum to 1.

A GAN's generator maps its latent code ``z`` to an image in one pass, so the same two walks need no sampler:

* :func:`interpolate_latents` - the codes of two seeds (those :func:`~dreamdata.sampling.generate.generate`
  draws for sample ``index``), joined by slerp or by a straight line (``path="linear"``, as Radford et al.
  2016 walked DCGAN's uniform latent space; for Gaussian codes slerp keeps the norm, White 2016);
* :func:`interpolate_generator_classes` - one code, the class moving from A to B: the generator's
  class-conditional batch norm takes soft labels, so frame ``k`` uses the gains and biases
  ``(1 - lam) gamma_A + lam gamma_B`` (the class-embedding interpolation of Brock et al. 2019).

All are deterministic: the same arguments give the same pixels.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from dreamdata.process.rng import per_sample_noise
from dreamdata.sampling.generate import sampling_timesteps
from dreamdata.sampling.registry import get_sampler

__all__ = ["ClassMixture", "PATHS", "interpolate_classes", "interpolate_generator_classes", "interpolate_latents",
           "interpolate_seeds", "lerp_path", "slerp", "slerp_path"]

PARALLEL_COS = 0.9995  # above this cosine the arc is indistinguishable from the chord: interpolate linearly


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical linear interpolation from ``a`` (``weight = 0``) to ``b`` (``weight = 1``) (Shoemake 1985).

    ``a`` and ``b`` are treated as single vectors (all elements). With ``theta`` the angle between them,
    ``slerp = sin((1 - w) theta) / sin(theta) a + sin(w theta) / sin(theta) b``: for unit vectors the result
    stays on the unit sphere; for vectors of equal norm it keeps that norm. Nearly parallel vectors
    (cosine above 0.9995, where ``sin(theta)`` is tiny and the arc is the chord) fall back to linear
    interpolation; exactly opposite vectors have no unique great circle and raise ``ValueError``, as do
    zero vectors. Computed in float64; returned in ``a``'s dtype. The endpoints are returned exactly.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    weight = float(weight)
    if weight == 0.0:
        return a.clone()
    if weight == 1.0:
        return b.to(a.dtype).clone()
    a64, b64 = a.double(), b.double()
    norm_a, norm_b = a64.norm(), b64.norm()
    if norm_a == 0 or norm_b == 0:
        raise ValueError("slerp of a zero vector: the angle is undefined")
    cos = float((a64.flatten() @ b64.flatten()) / (norm_a * norm_b))
    cos = max(-1.0, min(1.0, cos))
    if cos > PARALLEL_COS:
        mixed = (1.0 - weight) * a64 + weight * b64
    else:
        theta = math.acos(cos)
        sin_theta = math.sin(theta)
        if sin_theta < 1e-6:
            raise ValueError("slerp of opposite vectors: no unique great circle joins them")
        mixed = (math.sin((1.0 - weight) * theta) / sin_theta) * a64 + (math.sin(weight * theta) / sin_theta) * b64
    return mixed.to(a.dtype)


def slerp_path(a: torch.Tensor, b: torch.Tensor, frames: int) -> torch.Tensor:
    """``frames`` evenly spaced points of :func:`slerp` from ``a`` to ``b`` (both included), stacked."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    return torch.stack([slerp(a, b, k / (frames - 1)) for k in range(frames)])


def lerp_path(a: torch.Tensor, b: torch.Tensor, frames: int) -> torch.Tensor:
    """``frames`` evenly spaced points of the straight line from ``a`` to ``b`` (both included, exactly)."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    inner = [a + (b - a) * (k / (frames - 1)) for k in range(1, frames - 1)]
    return torch.stack([a.clone(), *inner, b.clone()])


PATHS = {"slerp": slerp_path, "linear": lerp_path}


class ClassMixture(torch.nn.Module):
    """A network whose "class" ``k`` is the output mixture ``(1 - lam_k) out(x, A) + lam_k out(x, B)``.

    Rows labelled ``k >= 0`` (an index into ``weights``) get the mixture; rows labelled with
    :attr:`null_class` (``-1``) get the wrapped network's unconditional output, so the samplers' usual
    classifier-free guidance (which calls the network on ``[labels, null]``) guides towards the mixture.
    """

    def __init__(self, network, class_a: int, class_b: int, weights: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.class_a, self.class_b = int(class_a), int(class_b)
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).flatten(), persistent=False)
        self.in_channels, self.image_size = network.in_channels, network.image_size
        self.num_classes = self.weights.numel()
        self.null_class = -1
        self.inner_null = int(network.null_class)
        self.train(network.training)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        # the output may have more channels than x (a learned variance's; those are mixed alike)
        out = None
        is_null = class_labels < 0
        mixed = ~is_null
        if bool(mixed.any()):
            xs, ts, frame = x[mixed], t[mixed], class_labels[mixed]
            out_a = self.network(xs, ts, torch.full_like(frame, self.class_a))
            out_b = self.network(xs, ts, torch.full_like(frame, self.class_b))
            lam = self.weights.to(x.device)[frame].view(-1, *([1] * (x.ndim - 1))).to(out_a.dtype)
            out = x.new_empty((x.shape[0], *out_a.shape[1:]))
            out[mixed] = (1.0 - lam) * out_a + lam * out_b
        if bool(is_null.any()):
            null = torch.full_like(class_labels[is_null], self.inner_null)
            unconditional = self.network(x[is_null], t[is_null], null)
            if out is None:
                out = x.new_empty((x.shape[0], *unconditional.shape[1:]))
            out[is_null] = unconditional
        return out


def _path(name: str):
    if name not in PATHS:
        raise ValueError(f"path {name!r}: expected one of {', '.join(PATHS)}")
    return PATHS[name]


def _device_of(network) -> torch.device:
    parameter = next(iter(network.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_class(network, label: Optional[int], what: str) -> None:
    num_classes = int(getattr(network, "num_classes", 0))
    if num_classes == 0:
        if label is not None:
            raise ValueError(f"{what}={label}: the network is unconditional")
        return
    if label is None or not 0 <= int(label) < num_classes:
        raise ValueError(f"{what} must be a class index in 0..{num_classes - 1}, got {label!r}")


@torch.no_grad()
def _ddim_decode(network, process, noise: torch.Tensor, labels: Optional[torch.Tensor], steps: int,
                 spacing: str, guidance_scale: float, x0_clip: str, null_class: Optional[int] = None) -> torch.Tensor:
    timesteps = sampling_timesteps(process, steps, spacing).to(noise.device)
    was_training = network.training
    network.eval()
    try:
        images = get_sampler("ddim")(network, process, noise, timesteps, class_labels=labels,
                                     guidance_scale=guidance_scale, generator=None, x0_clip=x0_clip,
                                     progress=False, null_class=null_class, eta=0.0)
    finally:
        network.train(was_training)
    return images.float().clamp(-1.0, 1.0).cpu()


def interpolate_seeds(network, process, class_label: Optional[int], seed: int, seed2: int, frames: int = 8,
                      steps: int = 50, spacing: str = "linspace", guidance_scale: float = 0.0,
                      device: Optional[torch.device | str] = None, index: int = 0,
                      x0_clip: str = "static", path: str = "slerp") -> torch.Tensor:
    """DDIM (eta = 0) decodings of the slerp (or ``path="linear"``) path between the noises of ``seed`` and
    ``seed2``.

    Returns ``[frames, C, H, W]`` in ``[-1, 1]`` (CPU). The noises are those of sample ``index`` under each
    seed, so frame 0 (the last frame) equals ``generate(..., seed=seed, sampler="ddim", eta=0)`` (``seed2``)
    of that sample - up to the float rounding of batch-dependent kernels (see :mod:`.generate`).
    """
    _check_class(network, class_label, "class_label")
    device = torch.device(device) if device is not None else _device_of(network)
    shape = (int(network.in_channels), int(network.image_size), int(network.image_size))
    first = per_sample_noise(seed, [index], shape, device)[0]
    last = per_sample_noise(seed2, [index], shape, device)[0]
    noise = _path(path)(first, last, frames)
    labels = None if class_label is None else torch.full((frames,), int(class_label), dtype=torch.long, device=device)
    return _ddim_decode(network, process, noise, labels, steps, spacing, guidance_scale, x0_clip)


def interpolate_classes(network, process, class_a: int, class_b: int, seed: int, frames: int = 8,
                        steps: int = 50, spacing: str = "linspace", guidance_scale: float = 0.0,
                        device: Optional[torch.device | str] = None, index: int = 0,
                        x0_clip: str = "static") -> torch.Tensor:
    """DDIM (eta = 0) decodings of one noise with the output mixed from class A (frame 0) to B (last frame).

    See the module docstring for the mixture. Returns ``[frames, C, H, W]`` in ``[-1, 1]`` (CPU). The
    noise is that of sample ``index`` under ``seed``; the end frames equal the plain DDIM samples of
    class A and class B from that noise (up to float rounding).
    """
    _check_class(network, class_a, "class_a")
    _check_class(network, class_b, "class_b")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    device = torch.device(device) if device is not None else _device_of(network)
    shape = (int(network.in_channels), int(network.image_size), int(network.image_size))
    noise = per_sample_noise(seed, [index], shape, device).expand(frames, *shape).contiguous()
    weights = torch.tensor([k / (frames - 1) for k in range(frames)], dtype=torch.float32)
    mixture = ClassMixture(network, class_a, class_b, weights).to(device)
    labels = torch.arange(frames, dtype=torch.long, device=device)
    return _ddim_decode(mixture, process, noise, labels, steps, spacing, guidance_scale, x0_clip,
                        null_class=mixture.null_class)


@torch.no_grad()
def _generate_frames(generator, codes: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    was_training = generator.training
    generator.eval()  # eval-mode batch norm: each frame depends on its own code only
    try:
        return generator(codes, labels).float().clamp(-1.0, 1.0).cpu()
    finally:
        generator.train(was_training)


def interpolate_latents(generator, class_label: Optional[int], seed: int, seed2: int, frames: int = 8,
                        path: str = "slerp", device: Optional[torch.device | str] = None,
                        index: int = 0) -> torch.Tensor:
    """A GAN's images along the ``path`` (slerp or linear) between the latent codes of ``seed`` and
    ``seed2`` for sample ``index``, class ``class_label`` fixed. ``[frames, C, H, W]`` in ``[-1, 1]`` (CPU);
    the end frames are that sample's ``generate(..., sampler="gan")`` images under each seed."""
    _check_class(generator, class_label, "class_label")
    device = torch.device(device) if device is not None else _device_of(generator)
    shape = tuple(generator.start_shape)
    first = per_sample_noise(seed, [index], shape, device)[0]
    last = per_sample_noise(seed2, [index], shape, device)[0]
    codes = _path(path)(first, last, frames)
    labels = None if class_label is None else torch.full((frames,), int(class_label), dtype=torch.long, device=device)
    return _generate_frames(generator, codes, labels)


def interpolate_generator_classes(generator, class_a: int, class_b: int, seed: int, frames: int = 8,
                                  device: Optional[torch.device | str] = None, index: int = 0) -> torch.Tensor:
    """A GAN's images of one latent code (sample ``index`` under ``seed``) with soft labels moving from
    class A (frame 0, exactly the class-A sample) to class B (the last frame, the class-B sample)."""
    _check_class(generator, class_a, "class_a")
    _check_class(generator, class_b, "class_b")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    device = torch.device(device) if device is not None else _device_of(generator)
    shape = tuple(generator.start_shape)
    codes = per_sample_noise(seed, [index], shape, device).expand(frames, *shape).contiguous()
    weights = torch.zeros(frames, int(generator.num_classes), device=device)
    lam = torch.tensor([k / (frames - 1) for k in range(frames)], device=device)
    weights[:, int(class_a)] += 1.0 - lam
    weights[:, int(class_b)] += lam
    return _generate_frames(generator, codes, weights)
