"""The CuPy backend: the base class with ``xp = cupy`` (cuBLAS for matmul, CuPy's elementwise kernels).

Importing this module never touches the GPU; :func:`probe` does, once, when a backend is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from backprop.backends.base import Backend

INSTALL_HINT = "install CuPy for your CUDA version: pip install 'backprop[cuda12]' or 'backprop[cuda13]'"


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.xp = importlib.import_module("cupy")
        super().__init__(*args, **kwargs)

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()

    # CuPy's legacy RandomState takes a dtype in both draws (its Generator API is narrower).
    def seed(self, seed: int | None) -> None:
        self.rng = self.xp.random.RandomState(seed)

    def standard_normal(self, shape: Any, dtype: Any = None) -> Any:
        return self.rng.standard_normal(shape, dtype=self.dtype if dtype is None else dtype)

    def uniform(self, shape: Any, dtype: Any = None) -> Any:
        return self.rng.random_sample(shape, dtype=self.dtype if dtype is None else dtype)


def probe() -> str | None:
    """None when a CUDA device really runs a kernel through CuPy, else the reason it cannot."""
    if importlib.util.find_spec("cupy") is None:
        return f"CuPy is not installed: {INSTALL_HINT}"
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA device"
        if int((cupy.arange(4, dtype=cupy.float32) * 2).sum()) != 12:
            return "CuPy ran a test kernel on the GPU and got a wrong answer"
    except Exception as exc:  # any driver, runtime or compiler failure means: not usable here
        return f"CuPy is installed but CUDA does not work: {type(exc).__name__}: {exc}".strip()
    return None
