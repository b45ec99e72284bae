"""The Numba backend: NumPy arrays, with the kernels that measured faster replaced by parallel JIT loops.

Everything else is the NumPy reference (see ``kernels/numba_cpu.py`` for what was measured), and
matrix products stay on BLAS (NumPy's matmul). Numba's threads and BLAS's threads take turns, never
run at once; what matters on a small machine is that idle Numba threads sleep instead of spinning
while BLAS works, so the workqueue threading layer is the default here (set NUMBA_THREADING_LAYER to
choose another). NUMBA_NUM_THREADS sets Numba's thread count, OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS the BLAS one; ``backprop info`` shows both. Kernels compile on first use, not at
import, and are cached on disk for the next process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from backprop.backends.base import Backend

INSTALL_HINT = "pip install 'backprop[numba]'"


def _flat(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


class NumbaBackend(Backend):
    name = "numba"
    xp = np

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        numba = importlib.import_module("numba")
        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "workqueue"
        self.k = importlib.import_module("backprop.kernels.numba_cpu")
        super().__init__(*args, **kwargs)

    # -- activations ------------------------------------------------------------------------------
    def _map(self, kernel: Callable[..., None], *arrays: Any) -> Any:
        """Run an elementwise kernel over flat contiguous copies (or views) of same-shaped arrays."""
        out = np.empty(arrays[0].shape, dtype=arrays[0].dtype)
        kernel(*(_flat(a) for a in arrays), out.reshape(-1))
        return out

    def relu(self, x: Any) -> Any:
        return self._map(self.k.relu, x)

    def relu_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.relu_backward, dout, y)

    def sigmoid(self, x: Any) -> Any:
        return self._map(self.k.sigmoid, x)

    def sigmoid_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.sigmoid_backward, dout, y)

    def tanh_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.tanh_backward, dout, y)


def probe() -> str | None:
    """None when Numba imports, else the reason (not installed, or broken against this NumPy)."""
    if importlib.util.find_spec("numba") is None:
        return f"Numba is not installed: {INSTALL_HINT}"
    try:
        importlib.import_module("numba")
    except Exception as exc:  # e.g. a Numba release that does not support this NumPy
        return f"Numba is installed but does not import: {type(exc).__name__}: {exc}"
    return None
