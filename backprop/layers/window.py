"""The sliding-window arguments Conv2D and MaxPool2D share: kernel size, stride and padding (whether the
window fits an input is the backend kernels' check, the same on every backend)."""

from __future__ import annotations

import numbers
from typing import Any


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def as_pair(value: int | tuple[int, int], what: str, minimum: int = 1) -> tuple[int, int]:
    """Accept an int (NumPy integers too) or a pair of ints (height, width), each at least ``minimum``."""
    pair: tuple[Any, ...] = ((value, value) if _is_int(value)
                             else tuple(value) if isinstance(value, (tuple, list)) else ())
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])
