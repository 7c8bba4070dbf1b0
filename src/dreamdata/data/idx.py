"""Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzipped).

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the values in row-major order. Reading the files directly (instead of through
torchvision) lets dreamdata use copies that are already on disk, such as the Debian package
``dataset-fashion-mnist``, without any download.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dreamdata.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read IDX file ({error.strerror or error})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated gzip file ({error})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a numpy array of its stored shape.

    Raises :class:`DataError` naming ``path`` when the magic number, dimensions or length are wrong.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}; "
                        "expected 0000<type><ndim>, e.g. 00000803 for uint8 images)")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated IDX file (header announces {ndim} dimensions, "
                        f"file has only {len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * axis: 8 + 4 * axis], "big") for axis in range(ndim))
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "trailing bytes in"
        raise DataError(f"{path}: {problem} IDX file (shape {list(shape)} needs {expected} bytes, "
                        f"file has {len(raw)})")
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)
