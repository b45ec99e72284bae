"""An emulated CUDA device for the CuPy backend, so that CI runs CupyBackend on the CPU.

:func:`emulated_backend` builds a real :class:`~backprop.backends.cupy_backend.CupyBackend` with two
parts injected:

* ``xp``: :class:`EmulatedCupy`, NumPy under CuPy's name with the CuPy API the backend and CUDA-graph
  training use. Its arrays are :class:`~cuda_harness.device_array.DeviceArray` (``xp.ndarray``), a type
  of their own, so host arrays are not device arrays: ``xp.asarray(host)`` is a host-to-device copy,
  ``xp.asnumpy``/``.get()`` a device-to-host one, CuPy's functions, ufuncs and kernels refuse host
  arrays, and reductions give 0-d arrays. Every operation goes through :mod:`cuda_harness.device`,
  which counts the kernel launches CuPy would make (one per ufunc, reduction, data-producing function
  or method, fill, setitem, RawKernel launch; for a matmul, the copies and pointer-array kernels CuPy
  adds by its rules; none for views and ``empty``), the transfers and the host reads
  (:func:`count_launches`), and emulates streams, stream capture and CUDA graphs
  (``Stream.begin_capture``/``end_capture``, ``Graph.launch``) and memory pools (``MemoryPool``,
  ``using_allocator``).
* ``runner``: :class:`EmulatedRunner`, kernels/cuda.py's :class:`~backprop.kernels.cuda.CupyRunner`
  (same block size and grid computation) whose compiled kernels are the same ``.cu`` sources built by
  g++ (:mod:`cuda_harness.harness`). Each launch is checked as CuPy and CUDA would take it: the grid
  and block within CUDA's limits, every argument packed by CuPy's rules (NumPy scalars at their own
  width, Python int as 64-bit, Python float as double, bool as a 1-byte bool, a one-element host array
  by value, a device array as a bare data pointer, a larger host array refused) and checked against the
  kernel's C parameter list; an array must be of the pointee's dtype, aligned, with non-negative strides
  (CUDA gets only the pointer to its first element), and C-contiguous unless it is the one operand whose
  strides the kernel takes as arguments.

In a capture (the current stream capturing) device work is recorded, not run: an operation producing
new data runs once on the current (meaningless) contents to learn its result's shape, then the result
is poisoned (NaN, -1) and the operation recorded to write into it at replay; in-place work (``out=``,
setitem, fill, kernels) is only recorded. Host reads, pageable host-to-device copies, synchronization
and allocations outside a private pool (``using_allocator(pool.malloc)``) are refused with CuPy's or
CUDA's error. ``Graph.launch`` re-runs the recorded operations in order on the same arrays (their
contents now; scalars as they were at capture), counted as one launch (``Graph.size``: the launches it
stands for); random draws replay the numbers drawn at capture, as cuRAND's do.

It is a test seam, not a backend users can choose: it is not registered, and its instances say
``cupy`` as their name (they run CupyBackend's code) while test ids say ``cupy-emulated``.

What it cannot show: anything about real GPU execution (NVRTC, -ftz flushing, FMA contraction, CUDA's
math library, memory use, asynchrony and races between streams, speed); CuPy's exact kernel counts
for operations it implements with several kernels (``var``, ``pad``, boolean indexing: counted as
one); whether a capture would fail for reasons it does not model (a library call that is not
capturable, a cuBLAS workspace allocated during capture). And one door stays open: ``np.asarray`` of
a device array gives a host view where CuPy raises; host code must use ``xp.asnumpy``.
"""

from __future__ import annotations

import ctypes
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from backprop.backends.cupy_backend import CupyBackend
from backprop.kernels import cuda
from cuda_harness import device
from cuda_harness.device_array import DeviceArray, to_device

# CUDA's launch limits (compute capability 3.0 and later).
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)

# The one array operand a kernel may get non-C-contiguous, because its strides go along as arguments.
STRIDED_OPERAND = {"im2col": 1, "col2im": 0}

_CTYPES = {"f": ctypes.c_float, "d": ctypes.c_double, "i": ctypes.c_int, "q": ctypes.c_longlong,
           "?": ctypes.c_bool}
_CODES = {np.dtype(np.float32): "f", np.dtype(np.float64): "d", np.dtype(np.int32): "i",
          np.dtype(np.int64): "q", np.dtype(np.bool_): "?"}


class OutOfMemoryError(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError: CupyBackend's guard catches this type."""

    def __init__(self, size: int = 0, total: int = 0) -> None:
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")
        self._size = size


class RandomState:
    """cupy.random.RandomState, as CupyBackend uses it: the draws take a dtype and give device arrays,
    one cuRAND launch each. In a capture the numbers are drawn then (cuRAND's offset advances on the
    host) and every replay writes those same numbers, as a captured cuRAND launch does."""

    def __init__(self, seed: int | None = None) -> None:
        self._rs = np.random.RandomState(seed)

    def _draw(self, name: str, values: np.ndarray) -> DeviceArray:
        return device.launch(f"random.{name}", values.copy, wrap=to_device)

    def standard_normal(self, size: Any = None, dtype: Any = float) -> DeviceArray:
        return self._draw("standard_normal", np.asarray(self._rs.standard_normal(size), dtype=dtype))

    def random_sample(self, size: Any = None, dtype: Any = float) -> DeviceArray:
        return self._draw("random_sample", np.asarray(self._rs.random_sample(size), dtype=dtype))

    def randint(self, low: int, high: int | None = None, size: Any = None, dtype: Any = int) -> DeviceArray:
        return self._draw("randint", np.asarray(self._rs.randint(low, high, size, dtype=dtype)))  # 0-d for no size


class _Device:
    def __init__(self, device: int = 0) -> None:
        if device != 0:
            raise ValueError(f"the emulated device is device 0, not {device}")
        self.id = device
        self.attributes = {"MultiProcessorCount": 1}

    def synchronize(self) -> None:
        device.device_synchronize()


# Array creation: the launches each makes (empty allocates only; zeros is a memset).
CREATION = {"empty": 0, "zeros": 1, "ones": 1, "full": 1, "arange": 1, "linspace": 1, "eye": 1, "identity": 1,
            "tri": 1}
# Functions that take host data to the device (and device arrays as they are, or converted).
TO_DEVICE = {"asarray": None, "asanyarray": None, "array": None, "ascontiguousarray": "C", "asfortranarray": "F"}


def _has_device_array(args: Any) -> bool:
    return any(isinstance(a, DeviceArray) or isinstance(a, (tuple, list)) and _has_device_array(a) for a in args)


def _to_device(name: str, a: Any, dtype: Any = None, copy: bool | None = None, order: str | None = None,
               **kwargs: Any) -> DeviceArray:
    """xp.asarray and its kin: a device array as it is, or converted (one launch); host data copied."""
    order = TO_DEVICE[name] or order or "K"
    if isinstance(a, DeviceArray):
        fits = (dtype is None or np.dtype(dtype) == a.dtype) and (order in "KA" or a.flags[f"{order}_CONTIGUOUS"])
        if fits and not (name == "array" and copy is not False):
            return a
        return a.astype(a.dtype if dtype is None else dtype, order=order)
    device.host_to_device(f"xp.{name} of host data")
    with device.inside:
        result = np.array(a, dtype=dtype, order=order, copy=True, **kwargs).view(DeviceArray)
    device.allocate(result)
    return result


def _function(name: str, f: Any) -> Any:
    """xp.<name>: NumPy's function on device arrays (counted by their hooks), refusing host arrays as
    CuPy does; array creation and host-to-device copies counted here."""
    if name in TO_DEVICE:
        return functools.partial(_to_device, name)
    launches = CREATION.get(name, 1)

    @functools.wraps(f)
    def call(*args: Any, **kwargs: Any) -> Any:
        if device.nested() or _has_device_array(args) or _has_device_array(kwargs.values()):
            return f(*args, **kwargs)  # the device arrays' hooks count it
        host = next((a for a in args if isinstance(a, np.ndarray)), None)
        if host is not None and name not in CREATION:
            raise TypeError(f"Unsupported type {type(host)}")
        return device.launch(name, lambda: f(*args, **kwargs), launches=launches, wrap=to_device)
    return call


class EmulatedCupy:
    """NumPy under CuPy's name: NumPy's functions on :class:`DeviceArray` (``xp.ndarray``), plus the
    CuPy-only API the backend uses."""

    ndarray = DeviceArray
    free_memory = 8 * 2**30  # what memGetInfo reports
    total_memory = 16 * 2**30

    def __init__(self) -> None:
        runtime = SimpleNamespace(getDevice=lambda: 0, getDeviceCount=lambda: 1,
                                  memGetInfo=lambda: (self.free_memory, self.total_memory),
                                  CUDARuntimeError=device.CUDARuntimeError)
        memory = SimpleNamespace(OutOfMemoryError=OutOfMemoryError, MemoryPool=device.MemoryPool,
                                 MemoryPointer=device.MemoryPointer, using_allocator=device.using_allocator)
        self.cuda = SimpleNamespace(
            Device=_Device, runtime=runtime, memory=memory, MemoryPool=device.MemoryPool,
            using_allocator=device.using_allocator, Stream=device.Stream, Graph=device.Graph,
            graph=SimpleNamespace(Graph=device.Graph), get_current_stream=device.current_stream,
            stream=SimpleNamespace(Stream=device.Stream, get_current_stream=device.current_stream))
        self.random = SimpleNamespace(RandomState=RandomState)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if callable(attr) and not isinstance(attr, type):
            attr = _function(name, attr)
        setattr(self, name, attr)  # looked up once
        return attr

    def __repr__(self) -> str:
        return "<emulated cupy (NumPy arrays, kernels compiled by g++)>"

    @property
    def counts(self) -> device.Counts:
        """What ran on the emulated device (one device, shared by every EmulatedCupy)."""
        return device.COUNTS

    @staticmethod
    def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
        """A device-to-host copy, never a view: host code must not alias device arrays."""
        if isinstance(a, DeviceArray):
            return a.get(stream, order, out)
        return np.array(a, order=order, copy=True)  # CuPy's asnumpy takes host data too

    @staticmethod
    def get_default_memory_pool() -> device.MemoryPool:
        return device.DEFAULT_POOL


def _pack(kernel: str, index: int, arg: Any) -> tuple[str, Any, Any]:
    """(signature code, ctypes type, ctypes value) of one argument, packed as CuPy packs it."""
    if isinstance(arg, np.ndarray) and not isinstance(arg, DeviceArray):
        if arg.size != 1:  # CuPy passes a one-element host array by value, as a scalar of its dtype
            raise TypeError(f"You are trying to pass a numpy.ndarray of shape {arg.shape} as a kernel parameter. "
                            "Only numpy.ndarrays of size one can be passed by value. If you meant to pass a "
                            "pointer to __global__ memory, you need to pass a cupy.ndarray instead.")
        arg = arg.reshape(()).view(np.ndarray)[()]
    if isinstance(arg, DeviceArray):
        if arg.dtype not in _CODES or not arg.dtype.isnative:
            raise TypeError(f"{kernel}: argument {index} is a {type(arg).__name__} of {arg.dtype}: a kernel "
                            "takes arrays of float32, float64, int32, int64 or bool, native byte order")
        if any(s < 0 for s in arg.strides):
            raise ValueError(f"{kernel}: argument {index} has negative strides {arg.strides}; the kernel gets "
                             "only a pointer to its first element")
        if arg.ctypes.data % arg.dtype.itemsize:
            raise ValueError(f"{kernel}: argument {index} is not aligned to its {arg.dtype.itemsize}-byte elements")
        if not arg.flags.c_contiguous and STRIDED_OPERAND.get(kernel) != index:
            raise ValueError(f"{kernel}: argument {index} {arg.dtype} {arg.shape} with strides {arg.strides} is "
                             "not C-contiguous, and the kernel gets only its data pointer")
        return "*" + _CODES[arg.dtype], ctypes.c_void_p, ctypes.c_void_p(arg.ctypes.data)
    if type(arg) is bool or isinstance(arg, np.bool_):
        code = "?"
    elif type(arg) is int:
        if not -(2**63) <= arg < 2**63:
            raise OverflowError(f"{kernel}: argument {index} = {arg} does not fit CuPy's int64")
        code = "q"
    elif type(arg) is float:
        code = "d"
    elif isinstance(arg, np.generic) and arg.dtype in _CODES:
        code = _CODES[arg.dtype]
    else:
        raise TypeError(f"{kernel}: unsupported kernel argument {index} of type {type(arg).__name__}")
    ctype = _CTYPES[code]
    return code, ctype, ctype(arg.item() if isinstance(arg, np.generic) else arg)


def _dims(what: str, dims: Any, limits: tuple[int, ...]) -> tuple[int, ...]:
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if not 1 <= len(dims) <= 3 or not all(type(d) is int for d in dims):
        raise TypeError(f"the {what} must be 1 to 3 Python ints, got {dims!r}")
    for axis, (d, limit) in enumerate(zip(dims, limits[:len(dims)], strict=True)):
        if not 1 <= d <= limit:
            raise ValueError(f"the {what}'s {'xyz'[axis]} = {d} is outside CUDA's limit [1, {limit}]")
    return dims + (1,) * (3 - len(dims))


class EmulatedKernel:
    """One compiled instantiation, called like a ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, lib: ctypes.CDLL, kernel: str, dtype: Any) -> None:
        self.lib, self.kernel = lib, kernel
        self.name = cuda.name_expression(kernel, dtype)
        self.signature = lib.bp_signature(self.name.encode()).decode()
        if not self.signature:
            raise AttributeError(f"the compiled module has no kernel {self.name}")

    def __call__(self, grid: Any, block: Any, args: tuple, shared_mem: int = 0) -> None:
        grid3, block3 = _dims("grid", grid, MAX_GRID), _dims("block", block, MAX_BLOCK)
        if block3[0] * block3[1] * block3[2] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"a block of {block3} has more than {MAX_THREADS_PER_BLOCK} threads")
        if grid3[1:] != (1, 1) or block3[1:] != (1, 1):
            raise NotImplementedError("the emulated device runs 1-D launches only, as backprop's kernels are")
        if shared_mem:
            raise NotImplementedError("backprop's kernels use no dynamic shared memory")
        if not isinstance(args, tuple):
            raise TypeError(f"{self.kernel}: kernel arguments must be a tuple, got {type(args).__name__}")
        codes, ctypes_, values = zip(*(_pack(self.kernel, i, a) for i, a in enumerate(args)), strict=True)
        if "".join(codes) != self.signature:
            raise TypeError(f"{self.name}: arguments packed as {''.join(codes)!r}, the kernel's parameters are "
                            f"{self.signature!r}")
        address = self.lib.bp_kernel(self.name.encode())
        function = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_uint, *ctypes_)(address)
        # In a capture: recorded, the arrays kept alive with their pointers, the scalars as packed now.
        device.launch(self.name, lambda keep=args: function(grid3[0], block3[0], *values), in_place=True)


class EmulatedRunner(cuda.CupyRunner):
    """CupyRunner (block size, grid computation) on the emulated device: one multiprocessor, so at most
    ``blocks_per_sm`` blocks a launch, and the grid-stride loops wrap on anything larger than 8192
    elements."""

    def __init__(self, lib: ctypes.CDLL, xp: EmulatedCupy, max_blocks: int | None = None) -> None:
        super().__init__(max_blocks)
        self.lib, self._xp = lib, xp
        self._kernels: dict[tuple[str, str], EmulatedKernel] = {}

    @property
    def launches(self) -> int:
        """Launches of backprop's own kernels so far (graph replays aside: each counts as one "graph")."""
        return sum(device.COUNTS.by_operation[k.name] for k in self._kernels.values())

    @property
    def xp(self) -> Any:
        return self._xp

    def grid_limit(self) -> int:
        return self.max_blocks if self.max_blocks is not None else self.blocks_per_sm * 1

    def function(self, kernel: str, dtype: Any) -> EmulatedKernel:
        key = (kernel, np.dtype(dtype).name)
        if key not in self._kernels:
            if np.dtype(dtype) not in cuda.C_TYPES:
                raise TypeError(f"the CUDA kernels take float32 or float64, not {np.dtype(dtype)}")
            self._kernels[key] = EmulatedKernel(self.lib, kernel, dtype)
        return self._kernels[key]


def emulated_backend(lib: ctypes.CDLL, dtype: Any = np.float32, seed: int | None = None) -> CupyBackend:
    """A CupyBackend on the emulated device whose kernels are ``lib`` (from :func:`harness.build`)."""
    xp = EmulatedCupy()
    return CupyBackend(dtype, seed, xp=xp, runner=EmulatedRunner(lib, xp))


@dataclass
class Usage:
    """What running something did on the emulated device (:func:`count_launches`)."""

    launches: int  # kernel launches, a graph replay counting one
    by_operation: Counter[str]  # launches by operation: ufunc, method or function name, kernel, "graph"
    host_to_device: int
    device_to_host: int
    host_reads: int  # every wait for a device value, device-to-host copies included
    reads_by_operation: Counter[str]

    def __str__(self) -> str:
        ops = ", ".join(f"{name} {n}" for name, n in sorted(self.by_operation.items(), key=lambda kv: (-kv[1], kv[0])))
        return (f"{self.launches} launches ({ops}); {self.host_to_device} host-to-device and {self.device_to_host} "
                f"device-to-host copies; {self.host_reads} host reads")


def count_launches(backend: CupyBackend, fn: Callable[[], Any]) -> tuple[Any, Usage]:
    """``fn()``'s result and what it did on ``backend``'s emulated device."""
    if not isinstance(backend.xp, EmulatedCupy):
        raise TypeError(f"count_launches needs a backend on the emulated device, not {backend!r}")
    before = device.COUNTS.snapshot()
    result = fn()
    after = device.COUNTS.snapshot()
    return result, Usage(
        after["launches"] - before["launches"], after["by_operation"] - before["by_operation"],
        after["host_to_device"] - before["host_to_device"], after["device_to_host"] - before["device_to_host"],
        after["host_reads"] - before["host_reads"], after["reads_by_operation"] - before["reads_by_operation"])

