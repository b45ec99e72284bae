"""Weight initialization: He for layers feeding a ReLU, Glorot otherwise, or a fixed std.

Draws come from the backend's seeded generator, so the same seed builds the same network.
"""

from __future__ import annotations

import math
from typing import Any

from backprop.backends import Backend
from backprop.checks import check_number

InitSpec = str | float


def init_std(spec: InitSpec, fan_in: int, fan_out: int, nonlinearity: str | None) -> float:
    """Standard deviation of the normal draw for one weight tensor.

    ``spec`` is "auto" (He when the next nonlinearity is "relu", else Glorot), "he", "glorot", or a
    number used as the std itself (the classic ``weight_init_std = 0.01``).
    """
    if not isinstance(spec, str):  # a number (NumPy's too); anything else is a TypeError from the check
        return check_number(spec, "init std", lambda v: v > 0, "positive and finite")
    if spec == "auto":
        spec = "he" if nonlinearity == "relu" else "glorot"
    if spec == "he":
        return math.sqrt(2.0 / fan_in)
    if spec == "glorot":
        return math.sqrt(2.0 / (fan_in + fan_out))
    raise ValueError(f"unknown init {spec!r}: use 'auto', 'he', 'glorot' or a positive std")


def normal_weights(backend: Backend, shape: tuple[int, ...], std: float) -> Any:
    return backend.standard_normal(shape) * backend.dtype.type(std)
