"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself"): guide a model
with a weaker version of itself rather than with its unconditional self.

Classifier-free guidance extrapolates from the unconditional prediction towards the conditional one; it needs
class labels, and it trades variety for quality, because the two predictions differ in *what* they aim at as
well as in how well. Karras et al. extrapolate instead from a weaker model ``D₀`` - the same task, the same
conditioning, but less capacity or less training - towards the main model ``D₁`` (their eq. 2):

    D_w(x; σ) = w_K D₁(x; σ) + (1 - w_K) D₀(x; σ),        w_K > 1,

which, with this toolkit's guidance convention ``w = w_K - 1`` (``w = 0``: no guidance) and written for
epsilon, is

    ε̃(x_t) = (1 + w) ε₁(x_t) - w ε₀(x_t).

The two models make the same kind of error in the same places, the weaker one more of it, so the difference
points away from where both are wrong: samples move back towards the data without collapsing onto a few modes,
and it works for unconditional models, where classifier-free guidance has nothing to guide towards. The
weaker model here is any checkpoint of a compatible run - most simply the same run's own EMA at an earlier
training step, which costs no training beyond the run itself. Each sampler step evaluates both networks, so
autoguided sampling costs twice the network evaluations of the same sampler unguided.

Every parameterisation (ε, x₀, v, EDM's ``F``) is an affine function of ε at fixed ``(x_t, t)``, and the
weights ``1 + w`` and ``-w`` sum to 1, so combining the raw outputs gives exactly the guided ε whatever the
parameterisation (as for classifier-free guidance, :func:`~dreamdata.sampling.guidance.guided_output`). A
learned variance's channels are the main model's: guidance moves the mean (as in GLIDE).
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["AutoguidedNetwork", "guide_mismatch"]


class AutoguidedNetwork(torch.nn.Module):
    """``network`` guided by the weaker ``guide``: ``(1 + w) out₁ - w out₀`` on the prediction channels.

    A drop-in network for every sampler (and for classifier-free guidance on top: the conditional and
    unconditional halves are each autoguided). ``num_classes``, ``null_class``, ``in_channels`` and
    ``image_size`` are the main network's.
    """

    def __init__(self, network: torch.nn.Module, guide: torch.nn.Module, weight: float):
        super().__init__()
        if not weight > 0:
            raise ValueError(f"autoguidance weight must be > 0 (0 means no guide), got {weight!r}")
        self.network, self.guide, self.weight = network, guide, float(weight)
        self.num_classes = int(getattr(network, "num_classes", 0))
        self.null_class: Optional[int] = getattr(network, "null_class", None)
        for name in ("in_channels", "image_size"):  # what callers read off a network, the main one's
            if hasattr(network, name):
                setattr(self, name, getattr(network, name))

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        main = self.network(x, t, class_labels)
        weak = self.guide(x, t, class_labels)
        c = x.shape[1]  # the prediction's channels; any beyond are a learned variance's
        guided = (1.0 + self.weight) * main[:, :c] - self.weight * weak[:, :c]  # Karras et al. 2024, eq. 2
        return guided if main.shape[1] == c else torch.cat([guided, main[:, c:]], dim=1)


def guide_mismatch(model, guide) -> Optional[str]:
    """Why ``guide`` cannot guide ``model`` (both :class:`~dreamdata.training.pretrained.TrainedModel`), or ``None``.

    The two must be Gaussian diffusion models that read ``x_t`` the same way - the same ``ᾱ_t`` for every
    ``t`` (schedule and T) and the same parameterisation - so that their outputs at one ``(x_t, t)`` can be
    combined, and must take the same images and classes. Sizes, depths and training may differ: a weaker
    guide is the point."""
    from dreamdata.process.gaussian import GaussianDiffusion

    if not (isinstance(model.process, GaussianDiffusion) and isinstance(guide.process, GaussianDiffusion)):
        kinds = f"{model.config.process.kind} and {guide.config.process.kind}"
        return f"autoguidance applies to Gaussian diffusion runs only (got {kinds})"
    mine, theirs = model.process.schedule.alpha_bar, guide.process.schedule.alpha_bar
    if mine.shape != theirs.shape or not torch.allclose(mine.double(), theirs.double(), rtol=0, atol=1e-9):
        return (f"its noise schedule differs ({guide.config.process.schedule}, T = {theirs.numel()} against the "
                f"model's {model.config.process.schedule}, T = {mine.numel()})")
    for key in ("prediction", "sigma_data"):
        if getattr(model.config.process, key) != getattr(guide.config.process, key):
            return (f"process.{key} is {getattr(guide.config.process, key)!r} in the guide, "
                    f"{getattr(model.config.process, key)!r} in the model")
    if tuple(guide.image_shape) != tuple(model.image_shape):
        return f"it was trained on images of shape {tuple(guide.image_shape)}, the model on {tuple(model.image_shape)}"
    if int(getattr(guide.network, "num_classes", 0)) != int(getattr(model.network, "num_classes", 0)):
        return (f"it has {int(getattr(guide.network, 'num_classes', 0))} classes, the model "
                f"{int(getattr(model.network, 'num_classes', 0))} (0 = unconditional)")
    if int(getattr(model.network, "num_classes", 0)) and list(guide.class_names) != list(model.class_names):
        return f"its classes are {list(guide.class_names)}, the model's {list(model.class_names)}"
    return None
