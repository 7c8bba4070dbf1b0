"""argparse pieces every command shares: number types that refuse nan/inf, and one-line usage errors.

``float("nan")`` and ``float("inf")`` parse, so ``type=float`` lets ``--guidance nan`` through to the sampler,
which then writes flat grey images (and a dream run records ``guidance: nan``, which never compares equal on
resume). Every float option uses one of the types below instead.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from dreamdata.errors import DreamdataError
from dreamdata.precisions import SAMPLING_PRECISIONS


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``dreamdata sample: error: ...``), exit status 2,
    like the errors of :class:`dreamdata.errors.DreamdataError`; ``--help`` still shows the full usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A float that is neither nan nor inf."""
    return _number(text)


def non_negative_float(text: str) -> float:
    """A finite float ``>= 0`` (a noise std, a DDIM eta)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float ``> 0`` (a learning rate, a ratio)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def guidance_scale(text: str) -> float:
    """A classifier-free guidance scale ``w >= 0``: ``w = 0`` is the plain conditional model, and ``w < 0``
    would push samples away from their class (towards the unconditional model and beyond), which is no
    guidance anyone means to ask for. Measured, not assumed (BENCHMARKS.md, session 31): dreaming at w = -0.25
    and -0.5 trained worse synthetic-only classifiers than w = 0 (82.6 and 78.0 % against 83.8 % on held-out
    training images), with images that leave their class."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a guidance scale w >= 0 (0 = no guidance), got {text!r}")
    return value


def guidance_interval(text: str) -> tuple[float, float]:
    """``LO,HI``: the noise levels ``σ_lo < σ ≤ σ_hi`` (EDM's σ) at which classifier-free guidance is applied,
    e.g. ``0.28,5.42`` (see :mod:`dreamdata.sampling.guidance`)."""
    from dreamdata.sampling.guidance import check_guidance_interval

    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = None
    if values is None or len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected LO,HI: two noise levels sigma_lo,sigma_hi such as 0.28,5.42, "
                                         f"got {text!r}")
    try:
        return check_guidance_interval(values, "LO,HI")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 <= LO < HI, both finite (guidance applies where "
                                         f"LO < sigma <= HI), got {text!r}") from None


def check_output_directory(path: str, option: str = "--out", file_inside: bool = False) -> None:
    """``path`` (or, with ``file_inside``, the folder ``path`` is a file in) is a directory or can be made one:
    neither it nor an existing folder above it is a file (``mkdir`` would fail with a FileExistsError
    traceback, after the sampling)."""
    target = Path(path).expanduser()
    target = target.parent if file_inside else target
    for candidate in (target, *target.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = ("is an existing file" if candidate == Path(path).expanduser() else
                        f"lies inside {candidate}, a file")
                raise DreamdataError(f"{option} {path}: {what}, so no output directory can be made there")
            return


def check_positive(**values) -> None:
    """Each given option (``name=value``; ``None`` = not given) is a positive integer."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise DreamdataError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def add_precision_argument(parser: argparse.ArgumentParser, recorded_in: str) -> None:
    """``--precision fp32|bf16``: the arithmetic of the network's evaluations while sampling."""
    parser.add_argument("--precision", choices=SAMPLING_PRECISIONS, default="fp32",
                        help="the network's arithmetic: fp32 (default), or bf16 autocast (faster on a CPU or GPU with "
                             f"bf16 units; the sampler's own arithmetic stays fp32; recorded in {recorded_in})")


def add_guidance_arguments(parser: argparse.ArgumentParser, recorded_in: str) -> None:
    """``--guidance W`` and ``--guidance-interval LO,HI``: classifier-free guidance (Ho & Salimans 2022), applied
    at every step or only in an interval of noise levels (Kynkaanniemi et al. 2024)."""
    parser.add_argument("--guidance", type=guidance_scale, default=0.0,
                        help="classifier-free guidance scale w >= 0 (default 0: none)")
    parser.add_argument("--guidance-interval", type=guidance_interval, default=None, metavar="LO,HI",
                        help="apply the guidance only at noise levels LO < sigma <= HI, EDM's sigma = "
                             "sqrt((1 - alpha_bar) / alpha_bar) (Kynkaanniemi et al. 2024, e.g. 0.28,5.42); the "
                             f"other steps take one conditional pass; recorded in {recorded_in} (default: guide "
                             "every step)")


def add_autoguide_arguments(parser: argparse.ArgumentParser, recorded_in: str) -> None:
    """``--autoguide STEP|RUN|CKPT`` and ``--autoguide-weight W``: autoguidance (Karras et al. 2024, see
    :mod:`dreamdata.sampling.autoguidance`), resolved by :func:`dreamdata.sampling.from_run.autoguide`."""
    parser.add_argument("--autoguide", default=None, metavar="STEP|RUN|CKPT",
                        help="autoguidance (Karras et al. 2024): guide the model with a weaker version of itself - a "
                             "training step of the same run (e.g. 500), another run directory or a .safetensors "
                             "checkpoint; works for unconditional models too; twice the network evaluations; "
                             f"recorded in {recorded_in}")
    parser.add_argument("--autoguide-weight", type=positive_float, default=1.0, metavar="W",
                        help="autoguidance weight w > 0: (1 + w) D_model - w D_guide (default 1)")
