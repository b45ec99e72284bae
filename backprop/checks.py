"""Checks of numeric arguments shared by optimizers, schedules and layers.

NaN fails every comparison, so a check written as ``if lr <= 0: raise`` lets NaN through; these ask
for what is allowed (``v > 0``) and for a finite number instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def check_number(value: Any, what: str, ok: Callable[[float], bool], allowed: str) -> float:
    """``value`` as a float when it is a finite real number for which ``ok`` holds; else a ValueError
    saying that ``what`` must be ``allowed``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and ok(number)):
        raise ValueError(f"{what} must be {allowed}, got {value!r}")
    return number


def check_fraction(value: Any, what: str) -> float:
    """A rate in [0, 1): momentum, a decay rate, Adam's betas."""
    return check_number(value, what, lambda v: 0 <= v < 1, "in [0, 1)")
