"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Everything dreamdata writes into a run directory goes through :func:`atomic_path`: the content is
written to a temporary file in the destination's own directory (same filesystem), flushed, and then
renamed over the destination with :func:`os.replace`, which POSIX guarantees to be atomic.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(destination: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``destination`` atomically.

    If the body raises, the temporary file is removed and ``destination`` is left untouched.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    os.chmod(temporary_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        yield temporary_path
        with open(temporary_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary_path, destination)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(destination: PathLike, text: str) -> None:
    """Write ``text`` to ``destination`` atomically."""
    with atomic_path(destination) as temporary:
        temporary.write_text(text)


def append_line(destination: PathLike, line: str) -> None:
    """Append one line to a log such as ``metrics.jsonl`` (a single write, flushed and synced)."""
    with open(destination, "a") as log:
        log.write(line.rstrip("\n") + "\n")
        log.flush()
        os.fsync(log.fileno())
