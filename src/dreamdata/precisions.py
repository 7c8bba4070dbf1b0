"""The arithmetic precisions a sampler can run its network in, named once and without importing torch.

The command-line parser (``--precision``), the sweep's cell check (``precision:``) and the study's
``dream.precision`` read the names from here before torch is loaded; :mod:`dreamdata.sampling.precision`
implements them. (Training has its own ``train.precision``, which also accepts ``auto``.)
"""

from __future__ import annotations

__all__ = ["SAMPLING_PRECISIONS", "expected_sampling_precision"]

SAMPLING_PRECISIONS = ("fp32", "bf16")


def expected_sampling_precision() -> str:
    """The phrase an error message gives for what was expected: ``fp32 or bf16``."""
    return " or ".join(SAMPLING_PRECISIONS)
