"""Checks of command-line option values shared by several commands (one home, so every command words its
errors the same way)."""

from __future__ import annotations

from dreamdata.errors import DreamdataError

__all__ = ["check_positive"]


def check_positive(**values) -> None:
    """Each given option (``name=value``; ``None`` = not given) is a positive integer."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise DreamdataError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
