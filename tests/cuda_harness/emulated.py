"""An emulated CUDA device for the CuPy backend, so that CI runs CupyBackend on the CPU.

:func:`emulated_backend` builds a real :class:`~backprop.backends.cupy_backend.CupyBackend` with two
parts injected:

* ``xp``: :class:`EmulatedCupy`, NumPy plus the CuPy-only API the backend uses (``asnumpy``,
  ``cuda.Device().synchronize``, ``cuda.runtime.memGetInfo``, ``cuda.memory.OutOfMemoryError``, the
  memory pool, the legacy ``random.RandomState`` whose draws take a dtype). It is not ``numpy`` itself,
  so code that treats NumPy specially (``xp is np``) takes the GPU path, as with CuPy.
* ``runner``: :class:`EmulatedRunner`, kernels/cuda.py's :class:`~backprop.kernels.cuda.CupyRunner`
  (same block size and grid computation) whose compiled kernels are the same ``.cu`` sources built by
  g++ (:mod:`cuda_harness.harness`). Each launch is checked as CuPy and CUDA would take it: the grid
  and block within CUDA's limits, every argument packed by CuPy's rules (NumPy scalars at their own
  width, Python int as 64-bit, Python float as double, bool as a 1-byte bool, arrays as a bare data
  pointer) and checked against the kernel's C parameter list; an array must be of the pointee's dtype,
  aligned, with non-negative strides (CUDA gets only the pointer to its first element), and
  C-contiguous unless it is the one operand whose strides the kernel takes as arguments.

It is a test seam, not a backend users can choose: it is not registered, and its instances say
``cupy`` as their name (they run CupyBackend's code) while test ids say ``cupy-emulated``.

What it cannot show: anything about real GPU execution (NVRTC, -ftz flushing, FMA contraction, CUDA's
math library, memory, streams, speed), nor CuPy's own array semantics: its arrays are NumPy arrays,
so reductions give NumPy scalars where CuPy gives 0-d arrays, and NumPy arrays pass the backend's
``is_array`` check where real CuPy would refuse them.
"""

from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any

import numpy as np

from backprop.backends.cupy_backend import CupyBackend
from backprop.kernels import cuda

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
    """cupy.random.RandomState, as CupyBackend uses it: the draws take a dtype and give arrays."""

    def __init__(self, seed: int | None = None) -> None:
        self._rs = np.random.RandomState(seed)

    def standard_normal(self, size: Any = None, dtype: Any = float) -> np.ndarray:
        return np.asarray(self._rs.standard_normal(size), dtype=dtype)

    def random_sample(self, size: Any = None, dtype: Any = float) -> np.ndarray:
        return np.asarray(self._rs.random_sample(size), dtype=dtype)

    def randint(self, low: int, high: int | None = None, size: Any = None, dtype: Any = int) -> np.ndarray:
        return np.asarray(self._rs.randint(low, high, size, dtype=dtype))  # CuPy: an array, 0-d for no size


class _MemoryPool:
    def total_bytes(self) -> int:
        return 0

    def free_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass


class _Device:
    def __init__(self, device: int = 0) -> None:
        if device != 0:
            raise ValueError(f"the emulated device is device 0, not {device}")
        self.id = device
        self.attributes = {"MultiProcessorCount": 1}

    def synchronize(self) -> None:
        pass


class EmulatedCupy:
    """NumPy under CuPy's name: NumPy's functions, plus the CuPy-only API the backend uses."""

    ndarray = np.ndarray
    free_memory = 8 * 2**30  # what memGetInfo reports
    total_memory = 16 * 2**30

    def __init__(self) -> None:
        runtime = SimpleNamespace(getDevice=lambda: 0, getDeviceCount=lambda: 1,
                                  memGetInfo=lambda: (self.free_memory, self.total_memory))
        self.cuda = SimpleNamespace(Device=_Device, runtime=runtime,
                                    memory=SimpleNamespace(OutOfMemoryError=OutOfMemoryError))
        self.random = SimpleNamespace(RandomState=RandomState)
        self._pool = _MemoryPool()

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def __repr__(self) -> str:
        return "<emulated cupy (NumPy arrays, kernels compiled by g++)>"

    @staticmethod
    def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
        """A copy, as a device-to-host transfer is: host code must not alias device arrays."""
        return np.array(a, order=order, copy=True)

    def get_default_memory_pool(self) -> _MemoryPool:
        return self._pool


def _pack(kernel: str, index: int, arg: Any) -> tuple[str, Any, Any]:
    """(signature code, ctypes type, ctypes value) of one argument, packed as CuPy packs it."""
    if isinstance(arg, np.ndarray):
        if type(arg) is not np.ndarray or arg.dtype not in _CODES or not arg.dtype.isnative:
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
        function(grid3[0], block3[0], *values)


class EmulatedRunner(cuda.CupyRunner):
    """CupyRunner (block size, grid computation) on the emulated device: one multiprocessor, so at most
    ``blocks_per_sm`` blocks a launch, and the grid-stride loops wrap on anything larger than 8192
    elements."""

    def __init__(self, lib: ctypes.CDLL, xp: EmulatedCupy, max_blocks: int | None = None) -> None:
        super().__init__(max_blocks)
        self.lib, self._xp = lib, xp
        self._kernels: dict[tuple[str, str], EmulatedKernel] = {}
        self.launches = 0

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
        self.launches += 1
        return self._kernels[key]


def emulated_backend(lib: ctypes.CDLL, dtype: Any = np.float32, seed: int | None = None) -> CupyBackend:
    """A CupyBackend on the emulated device whose kernels are ``lib`` (from :func:`harness.build`)."""
    xp = EmulatedCupy()
    return CupyBackend(dtype, seed, xp=xp, runner=EmulatedRunner(lib, xp))
