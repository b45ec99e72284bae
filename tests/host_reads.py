"""A test-only backend whose arrays count every read of their values by the host, and can refuse them.

On a GPU each such read (``float(x)``, ``int(x)``, ``bool(x)``, ``x.item()``, ``x.tolist()``,
``to_numpy``) waits for the device; a training step must make none, in the spirit of CuPy's
``allow_synchronize(False)``. This backend is the NumPy reference with every array a
:class:`GuardedArray`: the array module it computes with (``xp``) hands out guarded arrays from every
function and generator, and reductions keep 0-d results as arrays, so a value cannot reach Python
without passing one of the guarded doors. Calls whose result's size depends on the values (boolean
masks, ``nonzero``, ``unique``) count as reads too, since on a GPU they wait for it. One door stays
open: ``np.asarray`` on an array (which on CuPy raises instead, so GPU runs catch it). It is a test
seam, not a backend users can choose.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from backprop.backends.base import Backend


class HostReadError(AssertionError):
    """A value was read by the host while reads were refused."""


class Reads:
    """How many host reads happened, and whether they are refused right now."""

    count = 0
    refused = False

    @classmethod
    def record(cls, what: str) -> None:
        if cls.refused:
            raise HostReadError(f"host read ({what}) while reads are refused (inside a training step)")
        cls.count += 1

    @classmethod
    @contextlib.contextmanager
    def refusing(cls) -> Iterator[None]:
        before, cls.refused = cls.refused, True
        try:
            yield
        finally:
            cls.refused = before


def _guard(value: Any) -> Any:
    """ndarrays (and those inside tuples) as GuardedArrays; anything else as it is."""
    if isinstance(value, np.generic):  # a NumPy scalar result: a 0-d array, so reading it is seen
        return np.asarray(value).view(GuardedArray)
    if isinstance(value, np.ndarray) and not isinstance(value, GuardedArray):
        return value.view(GuardedArray)
    if isinstance(value, tuple):
        return tuple(_guard(v) for v in value)
    return value


class GuardedArray(np.ndarray):
    def __array_wrap__(self, array: Any, context: Any = None, return_scalar: bool = False) -> Any:
        return _guard(np.ndarray.__array_wrap__(self, array, context, False))  # 0-d stays an array

    def __getitem__(self, key: Any) -> Any:
        if any(isinstance(k, np.ndarray) and k.dtype == bool for k in (key if isinstance(key, tuple) else (key,))):
            Reads.record("boolean mask indexing")  # the result's size depends on the values: a read
        return _guard(super().__getitem__(key))

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))  # elements as 0-d arrays, never as NumPy scalars

    def _array_result(name: str) -> Any:  # noqa: N805 - methods that may return a NumPy scalar
        method = getattr(np.ndarray, name)

        @functools.wraps(method)
        def call(self: GuardedArray, *args: Any, **kwargs: Any) -> Any:
            return _guard(method(self, *args, **kwargs))
        return call

    argmax = _array_result("argmax")
    argmin = _array_result("argmin")
    dot = _array_result("dot")
    trace = _array_result("trace")
    del _array_result

    def _read(name: str) -> Any:  # noqa: N805 - builds the guarded doors below
        door = getattr(np.ndarray, name)

        @functools.wraps(door)
        def read(self: GuardedArray, *args: Any, **kwargs: Any) -> Any:
            Reads.record(name)
            return door(self.view(np.ndarray), *args, **kwargs)
        return read

    __float__ = _read("__float__")
    __int__ = _read("__int__")
    __bool__ = _read("__bool__")
    __index__ = _read("__index__")
    __complex__ = _read("__complex__")
    __format__ = _read("__format__")
    __str__ = _read("__str__")
    item = _read("item")
    tolist = _read("tolist")
    nonzero = _read("nonzero")
    del _read


# Functions whose result's size depends on the values: on a GPU they wait for it, like a read.
SIZED_BY_VALUES = {"nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract"}


class _Guarded:
    """An object (a module and its submodules, a generator) whose functions return guarded arrays."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if isinstance(attr, types.ModuleType):
            return _Guarded(attr)
        if callable(attr) and not isinstance(attr, type):
            @functools.wraps(attr)
            def call(*args: Any, **kwargs: Any) -> Any:
                if name in SIZED_BY_VALUES:
                    Reads.record(name)
                got = attr(*args, **kwargs)
                return _Guarded(got) if isinstance(got, np.random.Generator) else _guard(got)
            return call
        return attr


class GuardedNumpy(_Guarded):
    ndarray = GuardedArray

    def __init__(self) -> None:
        super().__init__(np)


class GuardedBackend(Backend):
    """The NumPy reference backend on guarded arrays; ``to_numpy`` counts as a read too."""

    name = "guarded"
    xp = GuardedNumpy()

    def to_numpy(self, a: Any) -> np.ndarray:
        Reads.record("to_numpy")
        return np.array(a.view(np.ndarray))
