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

from backprop.checkpoint import atomic_write

GZIP_MAGIC = b"\x1f\x8b"

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


def read_bytes(path: str | os.PathLike) -> bytes:
    """The contents of ``path``, decompressed when it is gzipped; a damaged gzip stream is an IdxError."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise IdxError(f"{path}: damaged or truncated gzip data ({exc}); delete it and fetch it again") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """The array held by the IDX bytes ``data`` (native byte order); ``name`` appears in errors."""
    if len(data) < 4:
        raise IdxError(f"{name}: {len(data)} bytes is too short for an IDX file (truncated or empty)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in TYPE_CODES:
        raise IdxError(f"{name}: not an IDX file (magic number 0x{data[:4].hex()}; IDX files start with "
                       f"0x0000 then a type code 08, 09, 0B, 0C, 0D or 0E)")
    if ndim == 0:
        raise IdxError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated inside the header ({len(data)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = TYPE_CODES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod would wrap around on a wild header
    found = len(data) - header
    if found < expected:
        raise IdxError(f"{name}: truncated: shape {shape} needs {expected:,} bytes of data, found {found:,}")
    if found > expected:
        raise IdxError(f"{name}: {found - expected:,} unexpected bytes after the data of shape {shape} "
                       "(wrong dimensions in the header, or a foreign file)")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzipped or raw; any damage is an :class:`IdxError` naming ``path``."""
    return parse_idx(read_bytes(path), str(path))


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
