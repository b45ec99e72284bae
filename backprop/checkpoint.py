"""Saving and loading named arrays as .npz: written atomically, read without pickle, checked whole.

A save goes to a temporary file beside the target and is renamed over it only once complete, so a
crash never leaves half a file under the real name (whoever owns the folder can clear the temporaries
of processes killed mid-write). A load reads and checks every array (names, shapes, dtypes,
finiteness) before the caller changes anything, so a bad file loses nothing.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from tokenize import TokenError
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np

from backprop.backends.base import FLOAT_DTYPES

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

META_KEY = "__backprop_meta__"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint for this model; the message names the file and why."""


TEMP_SUFFIX = ".tmp"
# The temporaries atomic_write makes, ".NAME.XXXXXXXX.tmp": its own 8 hex digits, or the 8 of
# [a-z0-9_] that tempfile.mkstemp gave before (leftovers of older versions are ours too).
_TEMP = r"\.{name}\.[a-z0-9_]{{8}}" + re.escape(TEMP_SUFFIX)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise an OSError of the disk (full, read-only, no permission) with ``path`` as its file name,
    so the message names the file being written rather than its temporary."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


class _TempFile(io.FileIO):
    """The temporary being written; a disk error while writing it names the target (see _naming)."""

    def __init__(self, fd: int, target: Path) -> None:
        super().__init__(fd, "wb")
        self.target = target

    def write(self, data: ReadableBuffer) -> int:
        with _naming(self.target):
            return super().write(data)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write`` on a temporary file ``.NAME.XXXXXXXX.tmp`` beside ``path``, then rename it to ``path``.

    Readers see the old file or the new one, never part of one; on failure the temporary is removed
    (a process killed mid-write leaves it: see :func:`remove_temp_files`).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    with _naming(path):
        tmp = _temp_name(path)  # O_EXCL: a name in use (one chance in 2**32) fails rather than clobbers
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
    try:
        with _TempFile(fd, path) as raw, io.BufferedWriter(raw) as f:
            write(f)
            f.flush()
            with _naming(path):
                os.fsync(fd)
        with _naming(path):
            os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):  # a read-only or vanished folder must not hide the first error
            os.unlink(tmp)
        raise
    return path


def remove_temp_files(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries :func:`atomic_write` left in ``folder`` for the files ``names`` when a
    process was killed mid-write; returns them. Safe only while no other process is writing those files,
    that is, while the caller owns the folder (a run's lock)."""
    pattern = re.compile("|".join(_TEMP.format(name=re.escape(name)) for name in names))
    removed = [p for p in Path(folder).iterdir() if pattern.fullmatch(p.name)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write host arrays and a JSON-able ``meta`` dict to ``path`` as an uncompressed .npz."""
    # dict[str, Any]: NumPy's stubs take **payload as possibly filling savez's bool allow_pickle
    payload: dict[str, Any] = {META_KEY: np.array(json.dumps(meta)), **arrays}
    return atomic_write(path, lambda f: np.savez(f, **payload))


ArraySpec = tuple[tuple[int, ...], np.dtype]  # an array's shape and dtype
READ_CHUNK = 1 << 20
MAX_NPY_HEADER = 10_000  # numpy's own default limit on an .npy header


class Readable(Protocol):
    """A binary stream: a file, a gzip.GzipFile, a zip member."""

    def read(self, size: int = ..., /) -> bytes: ...


def read_exactly(f: Readable, size: int) -> np.ndarray:
    """The next ``size`` bytes of ``f`` (fewer where it ends sooner) as a uint8 array.

    The buffer is filled a chunk at a time, so memory only grows with bytes that really arrive: a
    header that lies about the size costs what the file holds, never what the header claims.
    """
    buf = np.empty(size, np.uint8)
    view, got = buf.data, 0
    while got < size:
        chunk = f.read(min(READ_CHUNK, size - got))
        if not chunk:
            return buf[:got]
        view[got:got + len(chunk)] = chunk
        got += len(chunk)
    return buf


def _native(a: np.ndarray) -> np.ndarray:
    """``a`` (writable) in native byte order, swapped in place: big-endian data are the same numbers."""
    return a if a.dtype.isnative else a.byteswap(inplace=True).view(a.dtype.newbyteorder("="))


def _npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from an .npy header, read with numpy's bounded header parser."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
    raise ValueError(f".npy version {version} (backprop reads 1.0 and 2.0)")


def _member_header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[ArraySpec, bool, int]:
    """An .npy member's (shape, dtype), Fortran order and header length, checked against the member's
    size in the zip directory before anything is allocated; ValueError if it is not an .npy array."""
    with zf.open(info) as fp:
        try:
            shape, fortran, dtype = _npy_header(fp)
        except (SyntaxError, TokenError) as exc:  # numpy parses a header's dict as Python literals
            raise ValueError(f"unparsable .npy header ({exc})") from None
        offset = fp.tell()
    name = info.filename[:-4]
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
        raise CheckpointError(f"{path}: {name} has dtype {dtype}; a checkpoint holds plain numbers (an "
                              "object array would need pickle)")
    if any(n < 0 for n in shape):
        raise CheckpointError(f"{path}: {name} declares the negative shape {shape}")
    size = math.prod(shape) * dtype.itemsize  # Python ints: a wild shape cannot wrap around
    if offset + size != info.file_size:
        raise CheckpointError(f"{path}: {name} declares shape {shape} of {dtype} ({size:,} bytes) but its "
                              f"member holds {info.file_size - offset:,} bytes of data (damaged or forged)")
    return (shape, dtype), fortran, offset


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, spec: ArraySpec, fortran: bool,
                 offset: int) -> np.ndarray:
    shape, dtype = spec
    with zf.open(info) as fp:
        fp.seek(offset)
        data = read_exactly(fp, info.file_size - offset)
    if len(data) < info.file_size - offset:  # zipfile checks sizes itself; this keeps the view below valid
        raise EOFError(f"{info.filename} ends early")
    data = data.view(dtype)
    return _native(data.reshape(shape[::-1]).T if fortran else data.reshape(shape))


Expectation = Callable[[dict[str, Any]], Mapping[str, ArraySpec | None]]  # metadata -> the arrays a file must hold


def load_arrays(path: str | os.PathLike, expect: Expectation | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every array of a file written by :func:`save_arrays`; anything else is a CheckpointError.

    Nothing is read unchecked. The zip directory must list each array once, and since checkpoints are
    written uncompressed its members may not claim more bytes than the file has (a compressed "bomb"
    is refused unread). Each .npy header must describe exactly its member's bytes. ``expect``, given
    the metadata, may raise (a wrong format) or return the exact names, with their shapes and dtypes
    (None: any array, which the caller checks after reading); a mismatch is refused before any array
    is read. Arrays come back in native byte order.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint file (a folder or a device)")
    try:
        with zipfile.ZipFile(path) as zf:
            return _load(path, zf, expect)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # json and header errors: ValueError
        raise CheckpointError(f"{path}: unreadable, truncated or not an .npz file ({exc})") from None


def _load(path: Path, zf: zipfile.ZipFile, expect: Expectation | None
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    infos = zf.infolist()
    names = [info.filename for info in infos]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CheckpointError(f"{path}: members {twice} appear more than once (a forged or damaged file)")
    claimed, size = sum(info.file_size for info in infos), path.stat().st_size
    if claimed > size:
        raise CheckpointError(f"{path}: its members claim {claimed:,} bytes uncompressed, more than the file's "
                              f"{size:,}; backprop writes checkpoints uncompressed, so this one is refused unread")
    odd = sorted(n for n in names if not n.endswith(".npy"))
    if odd:
        raise ValueError(f"members {odd} are not arrays")
    headers = {}
    for info in infos:
        try:
            headers[info.filename[:-4]] = (info, *_member_header(path, zf, info))
        except CheckpointError:
            raise
        except ValueError:  # no .npy magic, or a header numpy cannot parse
            odd.append(info.filename[:-4])
    if odd:
        raise ValueError(f"members {odd} are not arrays")
    if META_KEY not in headers:
        raise CheckpointError(f"{path}: not a backprop checkpoint (no {META_KEY} entry)")
    meta_info, (meta_shape, meta_dtype), fortran, offset = headers.pop(META_KEY)
    if meta_shape != () or meta_dtype.kind != "U":
        raise CheckpointError(f"{path}: {META_KEY} is not a JSON string")
    meta = json.loads(str(_read_member(zf, meta_info, (meta_shape, meta_dtype), fortran, offset)))
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a JSON object")
    if expect is not None:
        native = {name: (shape, dtype.newbyteorder("=")) for name, (_, (shape, dtype), _, _) in headers.items()}
        _check_specs(path, native, expect(meta))  # as read: in native byte order
    return {name: _read_member(zf, *rest) for name, rest in headers.items()}, meta


def _check_specs(path: str | os.PathLike, found: dict[str, ArraySpec], expected: Mapping[str, ArraySpec | None]
                 ) -> None:
    """Raise a CheckpointError unless ``found`` has exactly the expected names, shapes and dtypes (an
    expectation of None: any shape and dtype)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: does not fit this model (missing {missing}, unexpected {extra})")
    for name, spec in expected.items():
        if spec is None:
            continue
        shape, dtype = spec
        have_shape, have = found[name]
        if have_shape != shape:
            raise CheckpointError(f"{path}: {name} has shape {have_shape}, the model expects {shape}")
        if have == dtype:
            continue
        if have.newbyteorder("=") == dtype.newbyteorder("="):
            fix = f"convert it to native byte order with a.astype({dtype.name!r})"
        elif have.newbyteorder("=") in FLOAT_DTYPES:
            fix = f"convert the model first with model.to(dtype={have.name!r})"
        else:
            fix = f"models hold {' or '.join(d.name for d in FLOAT_DTYPES)} arrays, so this is not a checkpoint of one"
        raise CheckpointError(f"{path}: {name} is {have}, the model is {dtype}; {fix}")


def check_arrays(path: str | os.PathLike, found: dict[str, np.ndarray], expected: Mapping[str, ArraySpec | None]
                 ) -> None:
    """Raise a CheckpointError unless ``found`` has exactly the expected names, shapes and dtypes, all finite."""
    _check_specs(path, {name: (a.shape, a.dtype) for name, a in found.items()}, expected)
    for name, a in found.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: {name} holds NaN or Inf values")
