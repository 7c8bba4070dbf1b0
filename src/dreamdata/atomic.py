"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Everything dreamdata writes into a run directory goes through :func:`atomic_path`: the content is
written to a temporary file in the destination's own directory (same filesystem), flushed, and then
renamed over the destination with :func:`os.replace`, which POSIX guarantees to be atomic.

A full disk (``ENOSPC``, or a full quota) while writing is a :class:`~dreamdata.errors.DiskFullError`
naming the file, and the destination keeps its previous content. Temporary files are named
``.<destination name>.<8 random characters>.tmp``; one left behind by a killed process is removed by
:func:`remove_stale_temporaries` when the run or dataset it belongs to is started or resumed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Union

from dreamdata.errors import DiskFullError

PathLike = Union[str, os.PathLike]

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# what tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") makes: 8 characters of its alphabet in between
_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(destination: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``destination`` atomically.

    If the body raises, the temporary file is removed and ``destination`` is left untouched.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise _disk_full(destination, error) from None
        raise
    temporary_path = Path(temporary)
    try:  # from the moment the file exists: an interrupt while closing or chmod-ing it also removes it
        os.close(handle)
        os.chmod(temporary_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
        yield temporary_path
        with open(temporary_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary_path, destination)
    except BaseException as error:
        temporary_path.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            raise _disk_full(destination, error) from None
        raise


def _disk_full(path: Path, error: OSError) -> DiskFullError:
    return DiskFullError(f"{path}: cannot write, the disk is full ({error.strerror or error}); "
                         "free some space and run the command again (the previous file, if any, is unchanged)")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(destination: PathLike, text: str) -> None:
    """Write ``text`` to ``destination`` atomically."""
    with atomic_path(destination) as temporary:
        temporary.write_text(text)


def write_bytes_atomic(destination: PathLike, data: bytes) -> None:
    """Write ``data`` to ``destination`` atomically.

    Serializers that write files themselves (``torch.save``, ``safetensors``) report a full disk as a
    cryptic error ("unexpected pos ..."); serializing to bytes first and writing them here turns it into
    a plain ``ENOSPC``, hence a :class:`DiskFullError`.
    """
    with atomic_path(destination) as temporary:
        temporary.write_bytes(data)


def remove_stale_temporaries(folder: PathLike, recursive: bool = False) -> list[Path]:
    """Delete temporary files of :func:`atomic_path`'s naming left in ``folder`` by an interrupted write.

    Call it only where no other process is writing (before a run or dream starts its work): a live
    write's temporary file looks the same. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for path in candidates:
        if _TEMPORARY_NAME.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def append_line(destination: PathLike, line: str) -> None:
    """Append one line to a log such as ``metrics.jsonl`` (a single write, synced).

    If the write fails (a full disk), the log is cut back to its previous length, so it never ends in a
    torn line.
    """
    data = (line.rstrip("\n") + "\n").encode()
    handle = os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(handle).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(handle, data[written:])
            os.fsync(handle)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, size)
            if error.errno in DISK_FULL_ERRNOS:
                raise _disk_full(Path(destination), error) from None
            raise
    finally:
        os.close(handle)
