"""The IDX file format of MNIST and its relatives: a tiny header, then one big-endian array.

A file (gzipped or raw, told apart by its first bytes, not its name) starts with two zero bytes, a
type code and the number of dimensions, then each dimension as a big-endian uint32, then the data.
Reading checks all of it, so a corrupt, truncated or foreign file is an :class:`IdxError` that names
the file and what is wrong, never a silently wrong array.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from backprop.checkpoint import Readable, atomic_write, read_exactly

GZIP_MAGIC = b"\x1f\x8b"
MAX_BYTES = 1 << 30  # the most data read_idx reads by default: twenty times MNIST's training images

# type code -> dtype of the (big-endian) data
TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder("="): code for code, dt in TYPE_CODES.items()}


class IdxError(ValueError):
    """A file that is not a well-formed IDX file; the message names the file and the problem."""


def _read_header(f: Readable, name: str, max_bytes: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header at the start of ``f``, refused when the data would exceed ``max_bytes``."""
    head = f.read(4)
    if len(head) < 4:
        raise IdxError(f"{name}: {len(head)} bytes is too short for an IDX file (truncated or empty)")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or code not in TYPE_CODES:
        raise IdxError(f"{name}: not an IDX file (magic number 0x{head.hex()}; IDX files start with "
                       f"0x0000 then a type code 08, 09, 0B, 0C, 0D or 0E)")
    if ndim == 0:
        raise IdxError(f"{name}: IDX header declares 0 dimensions")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise IdxError(f"{name}: truncated inside the header ({4 + len(dims)} of {4 + 4 * ndim} bytes)")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = TYPE_CODES[code]
    size = math.prod(shape) * dtype.itemsize  # Python ints: np.prod would wrap around on a wild header
    if size > max_bytes:
        raise IdxError(f"{name}: the header declares shape {shape} of {dtype.name}, {size:,} bytes, more than "
                       f"the {max_bytes:,} allowed (a damaged header or a decompression bomb)")
    return shape, dtype


def _read_data(f: Readable, name: str, max_bytes: int) -> np.ndarray:
    """The header, then exactly the bytes it declares: a short payload or any byte after it is refused."""
    shape, dtype = _read_header(f, name, max_bytes)
    size = math.prod(shape) * dtype.itemsize
    data = read_exactly(f, size)
    if len(data) < size:
        raise IdxError(f"{name}: truncated: shape {shape} needs {size:,} bytes of data, found {len(data):,}")
    if f.read(1):
        raise IdxError(f"{name}: unexpected bytes after the data of shape {shape} (wrong dimensions in the "
                       "header, or a foreign file)")
    array = data.view(dtype).reshape(shape)
    return array if array.dtype.isnative else array.byteswap(inplace=True).view(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file, gzipped or raw; any damage is an :class:`IdxError` naming ``path``.

    Only the bytes the header declares are read (and decompressed), after checking they are at most
    ``max_bytes``, so a small file cannot make the reader allocate gigabytes.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise IdxError(f"{path}: not a file (a folder or a device)")
    with open(path, "rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            raw.seek(0)
            return _read_data(raw, str(path), max_bytes)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                return _read_data(gz, str(path), max_bytes)
        except (EOFError, OSError, zlib.error) as exc:  # a bad CRC or header is a gzip.BadGzipFile, an OSError
            raise IdxError(f"{path}: damaged or truncated gzip data ({exc}); delete it and fetch it "
                           "again") from None


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (uint8, int8, int16, int32, float32 or float64, 1 to 255 dims)."""
    array = np.asarray(array)
    code = _CODE_OF.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot hold {array.dtype}: use uint8, int8, int16, int32, float32 or float64")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX holds 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=TYPE_CODES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, atomically; gzipped when ``compress`` (default: name ends .gz).

    The gzip stream carries no timestamp or name, so the same array always gives the same bytes.
    """
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        def write(f: IO[bytes]) -> None:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(data)
    else:
        def write(f: IO[bytes]) -> None:
            f.write(data)
    return atomic_write(path, write)
