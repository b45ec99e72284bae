"""The sliding-window arguments Conv2D and MaxPool2D share: kernel size, stride and padding."""

from __future__ import annotations

import numbers
from typing import Any

from backprop.layers.base import Layer


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


def check_window_fits(layer: Layer, x: Any, kernel: tuple[int, int], pad: tuple[int, int]) -> None:
    """A window larger than the padded image would give an empty output: say so instead."""
    h, w = x.shape[2:]
    if h + 2 * pad[0] < kernel[0] or w + 2 * pad[1] < kernel[1]:
        raise ValueError(f"{type(layer).__name__}: a {kernel[0]}x{kernel[1]} window does not fit in a "
                         f"{h}x{w} input padded by {pad}")
