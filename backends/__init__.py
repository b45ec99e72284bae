"""Backends: where arrays live and which code runs the hot kernels (``backprop.backends``)."""

from backprop.backends.base import Array, Backend
from backprop.backends.registry import (
    BackendUnavailableError,
    available_backends,
    get_backend,
    known_backends,
    manual_seed,
    use_backend,
)

__all__ = ["Array", "Backend", "BackendUnavailableError", "available_backends", "get_backend", "known_backends",
           "manual_seed", "use_backend"]
