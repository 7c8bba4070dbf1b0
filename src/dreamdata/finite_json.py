"""JSON that stays JSON when a number is NaN or infinite.

``json.dumps(float("nan"))`` writes the bare token ``NaN``, which is not JSON: ``jq``, JavaScript and most
other readers refuse the whole file. :func:`dumps` writes such a number as ``null`` and says what it was
in a sibling key, ``"loss": null, "loss_nonfinite": "nan"`` (``"nan"``, ``"inf"`` or ``"-inf"``); in a list,
the sibling holds one entry per item (``null`` for the finite ones). :func:`restore` undoes it, so a
reader gets the float back.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["FLAG_SUFFIX", "dumps", "encode", "restore"]

FLAG_SUFFIX = "_nonfinite"


def _kind(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _is_nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def encode(value: Any) -> Any:
    """A copy of a JSON-ready ``value`` with every non-finite float replaced as the module docstring says."""
    if isinstance(value, dict):
        encoded: dict = {}
        for key, item in value.items():
            encoded[key] = encode(item)
            if _is_nonfinite(item):
                encoded[f"{key}{FLAG_SUFFIX}"] = _kind(item)
            elif isinstance(item, (list, tuple)) and any(_is_nonfinite(x) for x in item):
                encoded[f"{key}{FLAG_SUFFIX}"] = [_kind(x) if _is_nonfinite(x) else None for x in item]
        return encoded
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if _is_nonfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`encode`'s copy; never writes ``NaN``/``Infinity``."""
    return json.dumps(encode(value), allow_nan=False, **kwargs)


def restore(value: Any) -> Any:
    """The inverse of :func:`encode`: the flagged ``null``s become their floats again, the flags go."""
    if isinstance(value, list):
        return [restore(item) for item in value]
    if not isinstance(value, dict):
        return value
    restored = {}
    for key, item in value.items():
        flag = value.get(f"{key}{FLAG_SUFFIX}")
        if key.endswith(FLAG_SUFFIX) and key[:-len(FLAG_SUFFIX)] in value:
            continue
        if isinstance(flag, str) and item is None:
            restored[key] = float(flag)
        elif isinstance(flag, list) and isinstance(item, list) and len(flag) == len(item):
            restored[key] = [float(kind) if kind is not None and x is None else restore(x)
                             for x, kind in zip(item, flag)]
        else:
            restored[key] = restore(item)
    return restored
