"""The NumPy backend: the base class as it is, with ``xp = numpy``; the reference for every other."""

from __future__ import annotations

import numpy as np

from backprop.backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np


def probe() -> str | None:
    """NumPy is a required dependency, so this backend is always available."""
    return None
