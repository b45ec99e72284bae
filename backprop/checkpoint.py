"""Saving and loading named arrays as .npz: written atomically, read without pickle, checked whole.

A save goes to a temporary file beside the target and is renamed over it only once complete, so a
crash never leaves half a file under the real name. A load reads and checks every array (names,
shapes, dtypes, finiteness) before the caller changes anything, so a bad file loses nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

META_KEY = "__backprop_meta__"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint for this model; the message names the file and why."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write`` on a temporary file in the target's folder, then rename it to ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file should look like any other
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


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
