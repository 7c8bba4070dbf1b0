"""Keeping the predicted clean image ``x0_hat`` inside the data range ``[-1, 1]`` during sampling.

Every sampler turns the network output into ``x0_hat`` and then, per its ``x0_clip`` argument:

* ``"none"``: uses it as is (the exact ODE/SDE of the trained model; what the analytic tests check);
* ``"static"``: clamps it to ``[-1, 1]`` (Ho et al. 2020's reference code; Saharia et al. 2022, sec. 2.3
  "static thresholding");
* ``"dynamic"``: Imagen's dynamic thresholding (Saharia et al. 2022, sec. 2.3): per sample, ``s`` is the
  ``p = 0.995`` quantile of ``|x0_hat|`` over all its pixels, floored at 1; ``x0_hat`` is clamped to
  ``[-s, s]`` and divided by ``s``. Samples already inside ``[-1, 1]`` (``s = 1``) are left unchanged,
  saturated ones are pulled inwards instead of being flattened at the bounds - which matters at large
  guidance weights, where the guided ``x0_hat`` overshoots the data range.
"""

from __future__ import annotations

import torch

__all__ = ["X0_CLIPS", "DYNAMIC_PERCENTILE", "check_x0_clip", "clip_x0", "dynamic_threshold"]

X0_CLIPS = ("none", "static", "dynamic")
DYNAMIC_PERCENTILE = 0.995  # Saharia et al. 2022, sec. 2.3 / appendix (p = 99.5%)


def check_x0_clip(x0_clip: str) -> None:
    """Raise ``ValueError`` unless ``x0_clip`` is one of :data:`X0_CLIPS`."""
    if x0_clip not in X0_CLIPS:
        raise ValueError(f"unknown x0_clip {x0_clip!r} (known: {', '.join(X0_CLIPS)})")


def _quantile_per_sample(values: torch.Tensor, q: float) -> torch.Tensor:
    """``q``-quantile of each row of ``values`` ``[B, N]`` with linear interpolation (numpy's default).

    Written with a sort instead of :func:`torch.quantile`, which refuses inputs above 16M elements.
    """
    ordered = values.sort(dim=1).values
    position = q * (values.shape[1] - 1)
    below = int(position)
    above = min(below + 1, values.shape[1] - 1)
    fraction = position - below
    return ordered[:, below] + fraction * (ordered[:, above] - ordered[:, below])


def dynamic_threshold(x0: torch.Tensor, percentile: float = DYNAMIC_PERCENTILE) -> torch.Tensor:
    """Imagen's dynamic thresholding of ``x0`` ``[B, ...]`` (Saharia et al. 2022, sec. 2.3), per sample.

    ``s = max(1, quantile(|x0|, percentile))`` over each sample's pixels, then ``clamp(x0, -s, s) / s``.
    The quantile is taken in float32 (or float64 for float64 input); the result keeps ``x0``'s dtype.
    """
    if not 0.0 <= percentile <= 1.0:
        raise ValueError(f"percentile must lie in [0, 1], got {percentile!r}")
    work = x0.double() if x0.dtype == torch.float64 else x0.float()
    s = _quantile_per_sample(work.abs().flatten(1), percentile)  # Saharia et al. 2022, sec. 2.3 (percentile of |x0|)
    s = s.clamp(min=1.0).view(-1, *([1] * (x0.ndim - 1)))  # Saharia et al. 2022, sec. 2.3 (s = max(s, 1))
    clipped = torch.maximum(torch.minimum(work, s), -s)  # Saharia et al. 2022, sec. 2.3 (clip to [-s, s])
    return (clipped / s).to(x0.dtype)  # Saharia et al. 2022, sec. 2.3 (divide by s)


def clip_x0(x0: torch.Tensor, x0_clip: str) -> torch.Tensor:
    """``x0`` treated per ``x0_clip`` (``"none"``, ``"static"`` or ``"dynamic"``, see the module docstring)."""
    if x0_clip == "none":
        return x0
    if x0_clip == "static":
        return x0.clamp(-1.0, 1.0)  # Saharia et al. 2022, sec. 2.3 (static thresholding)
    if x0_clip == "dynamic":
        return dynamic_threshold(x0)
    check_x0_clip(x0_clip)
    raise AssertionError("unreachable")
