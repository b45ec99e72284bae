"""Which backends exist, which of them can run here, and which one is current.

Backends are named "numpy", "numba" and "cupy"; "auto" means the fastest that really works: a GPU if
one runs a test kernel, else Numba if it is installed, else NumPy. Availability is probed lazily, once
per process, so importing backprop never touches a GPU.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from backprop.backends.base import LIVE_BACKENDS, Backend, DTypeLike, as_float_dtype

ENV_VAR = "BACKPROP_BACKEND"

# name -> (module under backprop.backends, class name); "auto" tries them in this order.
_BACKENDS: dict[str, tuple[str, str]] = {
    "cupy": ("cupy_backend", "CupyBackend"),
    "numba": ("numba_backend", "NumbaBackend"),
    "numpy": ("numpy_backend", "NumpyBackend"),
}

_reasons: dict[str, str | None] = {}
_instances: dict[tuple[str, np.dtype], Backend] = {}
_current: list[Backend] = []
_seed: dict[str, int | None] = {"value": None}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run on this machine; the message says why."""


def _module(name: str) -> Any:
    return importlib.import_module(f"backprop.backends.{_BACKENDS[name][0]}")


def _reason(name: str) -> str | None:
    if name not in _reasons:
        _reasons[name] = _module(name).probe()
    return _reasons[name]


def known_backends() -> tuple[str, ...]:
    """Every backend name this version knows, whether or not it can run here."""
    return tuple(_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name``, whether or not it can run here (its module imports lazily)."""
    return getattr(_module(name), _BACKENDS[name][1])


def available_backends() -> dict[str, str | None]:
    """Every known backend mapped to None when it can run here, else to the reason it cannot."""
    return {name: _reason(name) for name in _BACKENDS}


_warned: set[str] = set()  # the reasons "auto" has warned about: each once per process


def _resolve_auto() -> str:
    for name in _BACKENDS:
        reason = _reason(name)
        if reason is None:
            return name
        # CuPy installed but unusable (no device, a missing CUDA library, a failing kernel): one line, once.
        if name == "cupy" and not reason.startswith(_module(name).NOT_INSTALLED) and reason not in _warned:
            _warned.add(reason)
            first = reason.splitlines()[0] if reason.strip() else reason
            warnings.warn(f"backprop: no usable GPU ({first}); running on the CPU", stacklevel=4)
    raise AssertionError("unreachable: the NumPy backend is always available")


def get_backend(name: str | Backend | None = None, dtype: DTypeLike | None = None) -> Backend:
    """The backend called ``name`` ("numpy", "cupy", "auto"), computing in ``dtype`` (default float32).

    With no name: the one set by :func:`use_backend`, else ``$BACKPROP_BACKEND``, else "numpy".
    Raises :class:`BackendUnavailableError` when the named backend cannot run here.
    """
    if name is None and _current:
        name = _current[-1]
    if isinstance(name, Backend):
        if dtype is None or as_float_dtype(dtype) == name.dtype:
            return name
        if _instances.get((name.name, name.dtype)) is not name:
            return name.with_dtype(dtype)  # an instance made outside get_backend: its own sibling
        return get_backend(name.name, dtype)
    source = ""
    if name is None:
        name = os.environ.get(ENV_VAR) or "numpy"
        source = f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) else ""
    key = name.strip().lower()
    if key == "auto":
        key = _resolve_auto()
    if key not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}{source}: choose one of {', '.join([*_BACKENDS, 'auto'])}")
    reason = _reason(key)
    if reason is not None:
        raise BackendUnavailableError(f"backend {key!r} is not available: {reason}")
    dt = as_float_dtype(np.float32 if dtype is None else dtype)
    if (key, dt) not in _instances:
        _instances[key, dt] = backend_class(key)(dtype=dt, seed=_seed["value"])
    return _instances[key, dt]


@contextlib.contextmanager
def use_backend(name: str | Backend, dtype: DTypeLike | None = None) -> Iterator[Backend]:
    """Make ``name`` the default backend inside a ``with`` block (layers built there live on it)."""
    backend = get_backend(name, dtype)
    _current.append(backend)
    try:
        yield backend
    finally:
        _current.pop()


def manual_seed(seed: int) -> None:
    """Seed the generators of every backend created so far (by get_backend or not) and of those
    get_backend creates later."""
    _seed["value"] = seed
    for backend in list(LIVE_BACKENDS):
        backend.seed(seed)
