"""The emulated device's arrays: NumPy arrays of a type of their own, as CuPy's are, so that host
arrays are not device arrays, and every operation on them goes through :mod:`cuda_harness.device`
(counted as the launches CuPy would make, recorded in a capture, refused where CUDA refuses it).

NumPy's hooks route ufuncs (``__array_ufunc__``: operators, ``out=``, reductions) and NumPy functions
(``__array_function__``) here; the methods NumPy runs in C without a hook (``astype``, ``copy``,
``fill``, indexing, the host reads) are overridden. One door stays open, as in tests/host_reads.py:
``np.asarray``/``np.array`` of a device array give a host array without a copy being counted (CuPy
raises instead); host code must use ``xp.asnumpy`` or ``.get()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from cuda_harness import device

_BASIC = (int, np.integer, slice, type(Ellipsis), type(None))  # basic indexing: a view


class DeviceArray(np.ndarray):
    """An array in the emulated device's memory (exposed as ``xp.ndarray``)."""

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if device.nested():
            return _plain_ufunc(ufunc, method, inputs, kwargs)
        for x in inputs:
            if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
                raise TypeError(f"Unsupported type {type(x)}")  # CuPy's ufuncs take no host arrays
        out = kwargs.get("out")
        if out is not None and not all(isinstance(o, DeviceArray) for o in out):
            raise TypeError("Output arguments must be cupy.ndarray")
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        launches: device.Launches = _matmul_launches(*inputs, out=out[0] if out else None) if ufunc is np.matmul else 1

        def compute() -> Any:
            return _plain_ufunc(ufunc, method, inputs, kwargs)
        if out is not None or method == "at":
            device.launch(name, compute, launches=launches, in_place=True)
            return None if out is None else out[0] if len(out) == 1 else out
        return device.launch(name, compute, launches=launches, wrap=to_device)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if device.nested():
            return func._implementation(*args, **kwargs)
        name = func.__name__
        if name in METADATA:
            return func._implementation(*args, **kwargs)
        if name in SIZED_BY_VALUES or (name == "where" and len(args) + len(kwargs) == 1):
            device.host_read(name)

        def compute() -> Any:
            return func._implementation(*args, **kwargs)
        if name in IN_PLACE or kwargs.get("out") is not None:
            device.launch(name, compute, in_place=True)
            return kwargs.get("out")
        return device.launch(name, compute, launches=LAUNCHES.get(name, 1), wrap=to_device,
                             inputs=tuple(_arrays_in(args)))

    # -- indexing ------------------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        if device.nested():
            return np.ndarray.__getitem__(self, key)
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, np.ndarray) and k.dtype == np.bool_ for k in keys):
            device.host_read("boolean mask indexing")  # the result's size depends on the values
        if sum(isinstance(k, (int, np.integer)) for k in keys) == self.ndim and len(keys) == self.ndim:
            key = (*keys, Ellipsis)  # one element: a 0-d view, as CuPy gives, not a NumPy scalar
        if all(isinstance(k, _BASIC) for k in keys):
            return np.ndarray.__getitem__(self, key)  # a view: no launch
        return device.launch("getitem", lambda: np.ndarray.__getitem__(self, key), wrap=to_device, inputs=(self,))

    def __setitem__(self, key: Any, value: Any) -> None:
        if device.nested():
            return np.ndarray.__setitem__(self, key, value)
        if isinstance(value, np.ndarray) and not isinstance(value, DeviceArray) or isinstance(value, (list, tuple)):
            device.host_to_device("__setitem__ of host data")
            value = np.array(value)  # the copy CuPy makes, so later host writes do not reach the device
        device.launch("setitem", lambda: np.ndarray.__setitem__(self, key, value), in_place=True)

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))  # device arrays, as CuPy's (NumPy's gives scalars)

    # -- data to and from the host -------------------------------------------------------------------------
    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None) -> np.ndarray:
        """A device-to-host copy (cupy.ndarray.get)."""
        device.device_to_host("get")
        host = np.array(self.view(np.ndarray), order=order, copy=True)
        if out is None:
            return host
        out[...] = host
        return out

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """A host-to-device copy into this array (cupy.ndarray.set)."""
        if not isinstance(arr, np.ndarray) or isinstance(arr, DeviceArray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr).__name__}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: {arr.dtype} {arr.shape} into {self.dtype} {self.shape}")
        device.host_to_device("ndarray.set")
        np.copyto(self.view(np.ndarray), arr)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        plain = self.view(np.ndarray)
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (plain.ctypes.data, False),
                "strides": None if self.flags.c_contiguous else self.strides, "version": 3}

    def __deepcopy__(self, memo: Any) -> DeviceArray:
        return self.copy()

    def __copy__(self) -> DeviceArray:
        return self.copy()

    def __reduce__(self) -> Any:
        raise TypeError("a device array cannot be pickled here: copy it to the host first (xp.asnumpy)")


def _plain(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, DeviceArray) else x


def _plain_ufunc(ufunc: np.ufunc, method: str, inputs: tuple, kwargs: dict) -> Any:
    out = kwargs.get("out")
    if out is None:
        return getattr(ufunc, method)(*(_plain(x) for x in inputs), **kwargs)
    getattr(ufunc, method)(*(_plain(x) for x in inputs), **{**kwargs, "out": tuple(_plain(o) for o in out)})
    return out[0] if len(out) == 1 else out


def to_device(value: Any) -> Any:
    """A result as device arrays: NumPy scalars and Python numbers as 0-d arrays (CuPy's reductions
    give 0-d arrays), tuples and lists element by element."""
    if isinstance(value, DeviceArray):
        return value
    if isinstance(value, np.ndarray):
        return value.view(DeviceArray)
    if isinstance(value, (np.generic, bool, int, float, complex)):
        return np.asarray(value).view(DeviceArray)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v) for v in value)
    return value


def _arrays_in(args: Any) -> Any:
    for a in args:
        if isinstance(a, DeviceArray):
            yield a
        elif isinstance(a, (tuple, list)):
            yield from _arrays_in(a)


def _matmul_launches(a: Any, b: Any, out: Any = None) -> dict[str, int]:
    """cuBLAS's one launch, plus what CuPy launches around it (cupy/_core/_routines_linalg.pyx: matmul,
    dot, tensordot_core): a copy of an operand of another dtype; for 2-D products, a copy of an operand
    neither C- nor F-contiguous, and of the result into an ``out`` that is not C-contiguous, of another
    dtype, or that overlaps an operand; with more axes, a copy of every operand not C-contiguous, one
    of the result into an ``out`` it cannot write, and, when one operand's batch axes broadcast against
    the other's, the kernels that build the three arrays of matrix pointers for a batched GEMM."""
    dtype = np.promote_types(a.dtype, b.dtype)
    converts = int(a.dtype != dtype) + int(b.dtype != dtype)
    ndim = max(a.ndim, b.ndim)
    if ndim <= 2:
        copies = sum(x.ndim == 2 and not (x.flags.c_contiguous or x.flags.f_contiguous) for x in (a, b))
        pointers = 0
    else:
        copies = sum(not x.flags.c_contiguous and x.dtype == dtype for x in (a, b))
        batch_a = (1,) * (ndim - a.ndim) + a.shape[:-2] if a.ndim > 1 else (1,) * (ndim - 2)
        batch_b = (1,) * (ndim - b.ndim) + b.shape[:-2] if b.ndim > 1 else (1,) * (ndim - 2)
        broadcast = any(min(sa, sb) == 1 and max(sa, sb) > 1 for sa, sb in zip(batch_a, batch_b, strict=True))
        pointers = 3 * (ndim - 2) if broadcast else 0
    back = int(out is not None and (not out.flags.c_contiguous or out.dtype != dtype
                                    or np.may_share_memory(out, a) or np.may_share_memory(out, b)))
    return {"matmul": 1, "matmul: operand copy": converts + copies, "matmul: copy into out": back,
            "matmul: pointer arrays": pointers}


# NumPy functions that only look at metadata: no launch.
METADATA = {"shape", "ndim", "size", "result_type", "may_share_memory", "shares_memory", "iscomplexobj",
            "isrealobj", "can_cast", "min_scalar_type", "broadcast_shapes", "atleast_1d", "atleast_2d",
            "atleast_3d", "broadcast_to", "broadcast_arrays", "expand_dims", "squeeze", "transpose",
            "swapaxes", "moveaxis", "rollaxis", "diagonal", "real", "imag", "iscomplex", "isreal"}
# Functions that write into an argument.
IN_PLACE = {"copyto", "put", "place", "putmask", "fill_diagonal", "put_along_axis"}
# Functions whose result's size depends on the values: on a GPU they wait for it, a host read.
SIZED_BY_VALUES = {"nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract", "count_nonzero"}
# Launches other than one: an allocation alone launches nothing.
LAUNCHES = {"empty_like": 0}


def _method(name: str, *, in_place: bool = False, launches: int = 1) -> Callable[..., Any]:
    """An ndarray method NumPy runs in C, as one operation of ``launches`` kernels (0 for a view)."""
    plain = getattr(np.ndarray, name)

    @functools.wraps(plain)
    def call(self: DeviceArray, *args: Any, **kwargs: Any) -> Any:
        if device.nested():
            return plain(self, *args, **kwargs)
        if in_place or kwargs.get("out") is not None:
            device.launch(name, lambda: plain(self, *args, **kwargs), launches=launches, in_place=True)
            return kwargs.get("out")
        return device.launch(name, lambda: plain(self, *args, **kwargs), launches=launches, wrap=to_device,
                             inputs=(self, *_arrays_in(args)))
    return call


def _read(name: str) -> Callable[..., Any]:
    """A method that gives the host a value: a host read."""
    plain = getattr(np.ndarray, name)

    @functools.wraps(plain)
    def call(self: DeviceArray, *args: Any, **kwargs: Any) -> Any:
        device.host_read(name)
        return plain(self.view(np.ndarray), *args, **kwargs)
    return call


for _name in ("astype", "copy", "reshape", "ravel", "flatten", "take", "repeat", "argmax", "argmin", "max",
              "min", "sum", "mean", "prod", "var", "std", "any", "all", "clip", "cumsum", "cumprod", "dot",
              "round", "conj", "argsort", "searchsorted", "trace"):
    setattr(DeviceArray, _name, _method(_name))
for _name in ("fill", "sort", "put"):
    setattr(DeviceArray, _name, _method(_name, in_place=True))
for _name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__complex__",
              "__str__", "__repr__", "__format__"):
    setattr(DeviceArray, _name, _read(_name))
del _name


def _nonzero(self: DeviceArray) -> Any:
    device.host_read("nonzero")  # the result's size depends on the values
    return device.launch("nonzero", lambda: np.ndarray.nonzero(self), wrap=to_device)


DeviceArray.nonzero = _nonzero  # type: ignore[method-assign]
