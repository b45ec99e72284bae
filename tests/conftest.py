"""Shared fixtures: every backend-dependent test is written once and runs on each backend.

A backend that cannot run here (CuPy without a GPU) is skipped with the reason; GPU backends carry
the ``gpu`` mark, so ``pytest -m gpu`` runs exactly the GPU tests and ``-m "not gpu"`` the rest.
"""

from __future__ import annotations

import numpy as np
import pytest

from backprop.backends import available_backends, get_backend, known_backends

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


@pytest.fixture(params=_params([n for n in known_backends() if n != "numpy"]))
def accel_backend(request):
    """Each backend other than the NumPy reference, for parity tests against it."""
    return _get(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
