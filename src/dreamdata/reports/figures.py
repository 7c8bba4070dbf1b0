"""Writing matplotlib figures: PNG, atomically (a reader never sees half a file), figure closed afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

from dreamdata.atomic import atomic_path  # noqa: E402

__all__ = ["save_figure"]


def save_figure(figure, path: str | Path, dpi: Optional[int] = None, metadata: Optional[dict] = None) -> Path:
    """Save ``figure`` as a PNG at ``path`` atomically and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as temporary:
            # bbox "tight": a last tick label (e.g. "1250") is not cut off at the edge of the canvas
            figure.savefig(temporary, format="png", dpi=dpi, metadata=metadata, bbox_inches="tight", pad_inches=0.05)
    finally:
        plt.close(figure)
    return path
