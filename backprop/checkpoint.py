"""Saving and loading named arrays as .npz: written atomically, read without pickle, checked whole.

A save goes to a temporary file beside the target and is renamed over it only once complete, so a
crash never leaves half a file under the real name (whoever owns the folder can clear the temporaries
of processes killed mid-write). A load reads and checks every array (names, shapes, dtypes,
finiteness) before the caller changes anything, so a bad file loses nothing.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

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


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every array of a file written by :func:`save_arrays`; anything else is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded as npz:
            arrays = {name: npz[name] for name in npz.files}
        odd = sorted(name for name, a in arrays.items() if not isinstance(a, np.ndarray))
        if odd:  # NpzFile hands back the raw bytes of a member that is not an .npy file
            raise ValueError(f"members {odd} are not arrays")
        meta = json.loads(str(arrays.pop(META_KEY)))
    except KeyError:
        raise CheckpointError(f"{path}: not a backprop checkpoint (no {META_KEY} entry)") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable, truncated or not an .npz file ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is not a JSON object")
    return arrays, meta


def check_arrays(path: str | os.PathLike, found: dict[str, np.ndarray],
                 expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Raise a CheckpointError unless ``found`` has exactly the expected names, shapes and dtypes."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: does not fit this model (missing {missing}, unexpected {extra})")
    for name, (shape, dtype) in expected.items():
        a = found[name]
        if a.shape != shape:
            raise CheckpointError(f"{path}: {name} has shape {a.shape}, the model expects {shape}")
        if a.dtype != dtype:
            raise CheckpointError(f"{path}: {name} is {a.dtype}, the model is {dtype}; convert the model "
                                  f"first with model.to(dtype={a.dtype.name!r})")
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: {name} holds NaN or Inf values")
