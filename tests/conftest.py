"""Shared fixtures: every backend-dependent test is written once and runs on each backend.

A backend that cannot run here (CuPy without a GPU) is skipped with the reason; GPU backends carry
the ``gpu`` mark, so ``pytest -m gpu`` runs exactly the GPU tests and ``-m "not gpu"`` the rest.
"""

from __future__ import annotations

import numpy as np
import pytest

from backprop.backends import Backend, available_backends, get_backend, known_backends
from backprop.backends.registry import backend_class

GPU_BACKENDS = {"cupy"}


def _params(names):
    return [pytest.param(n, id=n, marks=[pytest.mark.gpu] if n in GPU_BACKENDS else []) for n in names]


def _get(name: str, dtype=np.float32):
    reason = available_backends()[name]
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    return get_backend(name, dtype)


@pytest.fixture(params=_params(known_backends()))
def backend(request):
    """Each backend in float32, its default dtype."""
    return _get(request.param)


@pytest.fixture(params=_params(known_backends()))
def backend64(request):
    """Each backend in float64 (gradient checks, exact comparisons)."""
    return _get(request.param, np.float64)


def overrides(name: str, kernel: str) -> bool:
    """Whether backend ``name`` has its own ``kernel`` rather than the reference it inherits (backends
    override ``_kernel``, the implementation behind the public method's argument checks)."""
    return getattr(backend_class(name), "_" + kernel) is not getattr(Backend, "_" + kernel)


def overriding(*kernels: str) -> list:
    """Backends with their own version of any of ``kernels``: the ones a parity test can check."""
    return _params([n for n in known_backends() if any(overrides(n, k) for k in kernels)])


@pytest.fixture
def accel_backend(request):
    """A backend with its own kernels, for parity tests against the NumPy reference; tests choose
    which ones with ``@pytest.mark.parametrize("accel_backend", overriding(...), indirect=True)``."""
    return _get(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
