"""Shared fixtures: every backend-dependent test is written once and runs on each backend.

A backend that cannot run here (CuPy without a GPU) is skipped with the reason; GPU backends carry
the ``gpu`` mark, so ``pytest -m gpu`` runs exactly the GPU tests and ``-m "not gpu"`` the rest.

Where no GPU runs CuPy (CI, laptops), every backend-parametrized test runs on ``cupy-emulated``
instead of ``cupy``: the CuPy backend on an emulated device (tests/cuda_harness/emulated.py: the same
.cu kernels compiled by g++, NumPy arrays), so CI runs CupyBackend's code on the CPU. It carries no
``gpu`` mark, and is skipped with the reason when g++ is missing. On a GPU machine the real device
takes its place (``pytest -m gpu``).
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from backprop.backends import Backend, available_backends, get_backend, known_backends
from backprop.backends.registry import backend_class
from cuda_harness import emulated, harness
from skip_summary import pytest_terminal_summary  # noqa: F401  (the hook: skips summed up by reason)

GPU_BACKENDS = {"cupy"}
NO_POOL_ENV = "BACKPROP_CUPY_POOL"  # "0": CuPy allocates every array with cudaMalloc (for compute-sanitizer)


def pytest_configure(config):
    if os.environ.get(NO_POOL_ENV) == "0" and available_backends()["cupy"] is None:
        import cupy

        cupy.cuda.set_allocator(None)  # the pool's large blocks would hide a small overrun from memcheck
EMULATED = "cupy-emulated"  # CupyBackend on the emulated device; not a registered backend


def _names(names):
    """``names``, with the emulated CuPy backend in place of "cupy" where no GPU runs CuPy here."""
    gpu = available_backends()["cupy"] is None
    return [EMULATED if n == "cupy" and not gpu else n for n in names]


def _params(names):
    return [pytest.param(n, id=n, marks=[pytest.mark.gpu] if n in GPU_BACKENDS else []) for n in _names(names)]


@pytest.fixture(scope="session")
def harness_lib(tmp_path_factory):
    """The CUDA kernels compiled by g++ as a host library (tests/cuda_harness), once per session;
    with sanitizers when $BACKPROP_HARNESS_SANITIZE is 1."""
    if harness.gxx() is None:
        pytest.skip("g++ not found: the CPU harness and the emulated CUDA device compile the kernels with it")
    try:
        sanitize = os.environ.get(harness.SANITIZE_ENV) == "1"
        return harness.build(tmp_path_factory.mktemp("cuda_harness"), sanitize=sanitize)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"g++ could not compile the CUDA kernels:\n{exc.stderr}")


_emulated: list[Backend] = []


def _get(request, name: str, dtype=np.float32):
    if name == EMULATED:
        if not _emulated:  # one instance per session; its float64 sibling shares its device
            _emulated.append(emulated.emulated_backend(request.getfixturevalue("harness_lib")))
        return _emulated[0].with_dtype(dtype)
    reason = available_backends()[name]
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    return get_backend(name, dtype)


@pytest.fixture(params=_params(known_backends()))
def backend(request):
    """Each backend in float32, its default dtype."""
    return _get(request, request.param)


@pytest.fixture(params=_params(known_backends()))
def backend64(request):
    """Each backend in float64 (gradient checks, exact comparisons)."""
    return _get(request, request.param, np.float64)


def overrides(name: str, kernel: str) -> bool:
    """Whether backend ``name`` has its own ``kernel`` rather than the reference it inherits (backends
    override ``_kernel``, the implementation behind the public method's argument checks)."""
    cls = backend_class("cupy" if name == EMULATED else name)
    return getattr(cls, "_" + kernel) is not getattr(Backend, "_" + kernel)


def overriding(*kernels: str) -> list:
    """Backends with their own version of any of ``kernels``: the ones a parity test can check."""
    return _params([n for n in known_backends() if any(overrides(n, k) for k in kernels)])  # cupy brings its emulation


@pytest.fixture
def accel_backend(request):
    """A backend with its own kernels, for parity tests against the NumPy reference; tests choose
    which ones with ``@pytest.mark.parametrize("accel_backend", overriding(...), indirect=True)``."""
    return _get(request, request.param)


@pytest.fixture(params=_params(["cupy"]))
def cupy_anywhere(request):
    """The CuPy backend, float32: on the GPU where one runs CuPy (marked ``gpu``), else on the emulated device."""
    return _get(request, request.param)


@pytest.fixture
def emulated_cupy(request):
    """The CuPy backend on the emulated device, float32 (its float64 sibling: ``.with_dtype``)."""
    return _get(request, EMULATED)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
