"""Optional TensorBoard logging of a run (``train.tensorboard=true``), beside its ``metrics.jsonl``.

Every numeric field of a metrics record becomes a scalar - ``train/loss``, ``train/loss_generator``,
``train/lr``, ``train/img_per_s``, ``held_out/val_loss``, ``eval/fid``, ... - at the record's step, and the
end-of-training sample grid an image (``samples/grid``), written through :mod:`torch.utils.tensorboard`
into ``run_dir/tensorboard``. ``metrics.jsonl`` stays the record reports read; this is a live view of it.
The ``tensorboard`` package is an optional extra, checked when the config asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from dreamdata.errors import ConfigError

LOG_DIR = "tensorboard"
NOT_SCALARS = ("step",)
MISSING = "train.tensorboard=true needs the tensorboard package: pip install 'dreamdata[tensorboard]'"


def require_tensorboard() -> None:
    """A one-line ConfigError naming what to install when the package is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None


def scalar_tag(key: str) -> str:
    """``eval_fid`` -> ``eval/fid``, ``val_loss`` -> ``held_out/val_loss``, anything else ``train/<key>``."""
    if key.startswith("eval_"):
        return f"eval/{key[5:]}"
    if key.startswith("val_"):
        return f"held_out/{key}"
    return f"train/{key}"


class TensorBoardLogger:
    """Writes a run's metrics records and sample grids as TensorBoard events."""

    def __init__(self, run_dir: Path):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / LOG_DIR))

    def log_record(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # None (nothing logged this window), flags, text
            self.writer.add_scalar(scalar_tag(key), float(value), step)
        self.writer.flush()

    def log_image_file(self, tag: str, path: Path, step: int) -> None:
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_logger(enabled: bool, run_dir: Optional[Path]) -> Optional[TensorBoardLogger]:
    """The run's logger when ``enabled`` and this process writes the run (``run_dir`` given), else None."""
    if not enabled:
        return None
    require_tensorboard()  # every process fails alike, before any work
    return TensorBoardLogger(run_dir) if run_dir is not None else None
