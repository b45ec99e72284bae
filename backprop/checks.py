"""Checks of numeric arguments shared by optimizers, schedules, layers and the command lines.

NaN fails every comparison, so a check written as ``if lr <= 0: raise`` lets NaN through; these ask
for what is allowed (``v > 0``) and for a finite number instead.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable
from typing import Any


def check_number(value: Any, what: str, ok: Callable[[float], bool], allowed: str) -> float:
    """``value`` as a float when it is a finite real number for which ``ok`` holds; a TypeError when
    it is no real number (a string, None, a bool), else a ValueError saying that ``what`` must be
    ``allowed``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and ok(number)):
        raise ValueError(f"{what} must be {allowed}, got {value!r}")
    return number


def check_positive_int(value: Any, what: str) -> int:
    """``value`` as an int when it is an integer >= 1 (NumPy integers too, not bools); else a ValueError."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def check_labels(labels: Any, classes: int, what: str) -> None:
    """Refuse integer class labels outside [0, classes), naming ``what`` and the range found (any array
    module; one read of the minimum and maximum)."""
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= classes:
            raise ValueError(f"{what}: labels must lie in [0, {classes - 1}], got values in [{lo}, {hi}]")


def check_fraction(value: Any, what: str) -> float:
    """A rate in [0, 1): momentum, a decay rate, Adam's betas."""
    return check_number(value, what, lambda v: 0 <= v < 1, "in [0, 1)")


def int_arg(low: int, words: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``; anything else is an argparse error saying ``words``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
        return value
    return parse


def float_arg(zero_ok: bool, words: str) -> Callable[[str], float]:
    """An argparse type: a finite number > 0 (>= 0 with ``zero_ok``); else an argparse error saying ``words``."""
    def parse(text: str) -> float:
        try:
            return check_number(float(text), "", (lambda v: v >= 0) if zero_ok else (lambda v: v > 0), words)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
    return parse
