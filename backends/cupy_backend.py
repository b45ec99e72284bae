"""The CuPy backend: arrays on a CUDA GPU, matrix products on cuBLAS, and the hot kernels in our own
CUDA code (kernels/cuda/*.cu through :mod:`backprop.kernels.cuda`, compiled on first use).

Importing this module never touches the GPU (nor imports CuPy); :func:`probe` does, once, when a
backend is asked for. Running out of GPU memory raises :class:`GPUOutOfMemoryError`, which names the
operation and the array it was working on, the bytes asked for and the memory that was free.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np

from backprop.backends.base import FLOAT_DTYPES, Backend, Pair
from backprop.backends.install import pip_install
from backprop.kernels import cuda
from backprop.kernels.arrays import Scalar

INSTALL_HINT = f"install CuPy for your CUDA version: {pip_install('cuda12', 'cuda13')}"


class GPUOutOfMemoryError(MemoryError):
    """The GPU had too little free memory for an allocation; the message says which and how much."""


def _describe(a: Any) -> str:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{np.dtype(a.dtype).name} {tuple(a.shape)}"
    return f"a {type(a).__name__}"


CUBLAS_STATUS_ALLOC_FAILED = 3  # cuBLAS could not allocate (its workspace, on a first product per stream)


def _out_of_memory(cupy: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory: CuPy's pool failing an allocation, or cuBLAS
    failing to allocate its workspace."""
    if isinstance(exc, cupy.cuda.memory.OutOfMemoryError):
        return True
    cublas = getattr(cupy.cuda, "cublas", None)  # CuPy imports it on first access
    error = getattr(cublas, "CUBLASError", None)
    return error is not None and isinstance(exc, error) and getattr(exc, "status", None) == CUBLAS_STATUS_ALLOC_FAILED


def out_of_memory_message(cupy: Any, what: str, exc: BaseException) -> str:
    """The message of a :class:`GPUOutOfMemoryError` for an out-of-memory ``exc`` in ``what``."""
    requested = getattr(exc, "_size", None)
    if isinstance(exc, cupy.cuda.memory.OutOfMemoryError):
        failed = f"CuPy could not allocate {f'{requested:,} bytes' if isinstance(requested, int) else 'memory'}"
    else:
        failed = "cuBLAS could not allocate its workspace"
    try:
        device = cupy.cuda.runtime.getDevice()
        free, total = cupy.cuda.runtime.memGetInfo()
        free_text = f"{free:,} of {total:,} bytes were free on GPU {device}"
    except Exception as info_exc:  # noqa: BLE001 - the report must not fail on a sick device
        free_text = f"the free memory is unknown ({type(info_exc).__name__}: {info_exc})"
    try:
        pool = cupy.get_default_memory_pool()
        pool_text = (f"; CuPy's memory pool holds {pool.total_bytes():,} bytes, {pool.free_bytes():,} of them "
                     "cached but unused")
    except Exception:  # noqa: BLE001
        pool_text = ""
    return (f"out of GPU memory in {what}: {failed}; {free_text}{pool_text}. Use a smaller batch or model, or "
            "free arrays you no longer need")


@contextlib.contextmanager
def oom_guard(cupy: Any, operation: str, *arrays: Any) -> Iterator[None]:
    """Turn running out of device memory inside the block (:func:`_out_of_memory`) into a
    :class:`GPUOutOfMemoryError` that names ``operation`` and the shapes and dtypes of ``arrays``."""
    try:
        yield
    except Exception as exc:
        if not _out_of_memory(cupy, exc):
            raise
        what = operation + (f" on {', '.join(_describe(a) for a in arrays)}" if arrays else "")
        raise GPUOutOfMemoryError(out_of_memory_message(cupy, what, exc)) from None


class CupyBackend(Backend):
    """``xp`` and ``runner`` are injection points (default: the ``cupy`` module and
    :func:`backprop.kernels.cuda.default_runner`); the CPU test suite passes an emulated device."""

    name = "cupy"

    def __init__(self, dtype: Any = np.float32, seed: int | None = None, *, xp: Any = None,
                 runner: cuda.Runner | None = None) -> None:
        self.xp = importlib.import_module("cupy") if xp is None else xp
        self.runner = runner
        super().__init__(dtype, seed)

    def _sibling(self, dtype: np.dtype) -> Backend:
        return CupyBackend(dtype, self.seed_value, xp=self.xp, runner=self.runner)

    def guard(self, operation: str, *arrays: Any) -> contextlib.AbstractContextManager[None]:
        return oom_guard(self.xp, operation, *arrays)

    @staticmethod
    def _native(*arrays: Any, in_place: tuple[Any, ...] = ()) -> bool:
        """Whether the CUDA kernels take these arrays: one float dtype (float32 or float64), and
        C-contiguous arrays where they are updated in place. Otherwise the reference runs."""
        dtype = arrays[0].dtype
        return (dtype in FLOAT_DTYPES and all(a.dtype == dtype for a in arrays)
                and all(a.flags.c_contiguous for a in in_place))

    # -- arrays -------------------------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        with self.guard("asarray", a):
            return super().asarray(a, dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a)

    def zeros(self, shape: Any, dtype: Any = None) -> Any:
        with self.guard(f"zeros({shape}, {np.dtype(self.dtype if dtype is None else dtype).name})"):
            return super().zeros(shape, dtype)

    def empty(self, shape: Any, dtype: Any = None) -> Any:
        with self.guard(f"empty({shape}, {np.dtype(self.dtype if dtype is None else dtype).name})"):
            return super().empty(shape, dtype)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()

    def can_hold(self, nbytes: int) -> bool:
        """Up to half the free device memory: the rest is for activations and CuPy's pool."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return nbytes <= free // 2

    # CuPy's legacy RandomState takes a dtype in both draws (its Generator API is narrower).
    def _generator(self, seed: int | None) -> Any:
        return self.xp.random.RandomState(seed)

    def standard_normal(self, shape: Any, dtype: Any = None) -> Any:
        with self.guard(f"standard_normal({shape})"):
            return self.rng.standard_normal(shape, dtype=self.dtype if dtype is None else dtype)

    def uniform(self, shape: Any, dtype: Any = None) -> Any:
        with self.guard(f"uniform({shape})"):
            return self.rng.random_sample(shape, dtype=self.dtype if dtype is None else dtype)

    # -- matrix products and convolution lowering ------------------------------------------------------
    def _matmul(self, a: Any, b: Any, out: Any | None = None) -> Any:
        with self.guard("matmul", a, b):
            # cuBLAS. CuPy's matmul copies an operand that is not C-contiguous, and computes into a
            # temporary when ``out`` is not C-contiguous (conv2d_forward/backward pass transposed views of both
            # kinds): an extra pass that a GPU profile should weigh against other layouts.
            return self.xp.matmul(a, b, out=out)

    def _whole_batch(self, pixels: int, patch_columns: int) -> bool:
        """Always: one large cuBLAS product per convolution. Per-image products broadcast the weights
        over the batch, for which CuPy copies the strided patch matrix and builds pointer arrays (five
        launches more a step, forward and backward; counted on the emulated device)."""
        return True

    def _im2col(self, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> Any:
        if not self._native(x):
            return super()._im2col(x, kernel, stride, pad)
        with self.guard("im2col", x):
            return cuda.im2col(x, kernel, stride, pad, runner=self.runner)

    def _col2im(self, col: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Any:
        if not self._native(col):
            return super()._col2im(col, x_shape, kernel, stride, pad)
        with self.guard("col2im", col):
            return cuda.col2im(col, x_shape, kernel, stride, pad, runner=self.runner)

    def _maxpool2d(self, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Any, Any]:
        """As the reference, but argmax is int32 (this backend's backward reads its own argmax)."""
        if not self._native(x):
            return super()._maxpool2d(x, kernel, stride, pad)
        with self.guard("maxpool2d", x):
            return cuda.maxpool2d(x, kernel, stride, pad, runner=self.runner)

    def _maxpool2d_backward(self, dout: Any, argmax: Any, x_shape: tuple[int, ...], kernel: Pair,
                           stride: Pair, pad: Pair) -> Any:
        if not self._native(dout):
            return super()._maxpool2d_backward(dout, argmax, x_shape, kernel, stride, pad)
        with self.guard("maxpool2d_backward", dout):
            return cuda.maxpool2d_backward(dout, argmax, x_shape, kernel, stride, pad, runner=self.runner)

    def _maxpool2d_relu(self, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Any, Any]:
        if not self._native(x):
            return super()._maxpool2d_relu(x, kernel, stride, pad)
        with self.guard("maxpool2d_relu", x):
            return cuda.maxpool2d(x, kernel, stride, pad, relu=True, runner=self.runner)

    def _maxpool2d_relu_backward(self, dout: Any, y: Any, argmax: Any, x_shape: tuple[int, ...], kernel: Pair,
                                 stride: Pair, pad: Pair) -> Any:
        if not self._native(dout, y):
            return super()._maxpool2d_relu_backward(dout, y, argmax, x_shape, kernel, stride, pad)
        with self.guard("maxpool2d_relu_backward", dout):
            return cuda.maxpool2d_backward(dout, argmax, x_shape, kernel, stride, pad, y=y, runner=self.runner)

    # -- activations ---------------------------------------------------------------------------------
    def _activation(self, name: str, *arrays: Any) -> Any:
        if not self._native(*arrays):
            return getattr(super(), "_" + name)(*arrays)
        with self.guard(name, *arrays):
            return getattr(cuda, name)(*arrays, runner=self.runner)

    def _relu(self, x: Any) -> Any:
        return self._activation("relu", x)

    def _add_bias_relu(self, y: Any, b: Any) -> None:
        if not (self._native(y, b, in_place=(y,))):
            return super()._add_bias_relu(y, b)
        with self.guard("add_bias_relu", y):
            cuda.add_bias_relu(y, b, runner=self.runner)

    def _relu_bias_grad(self, dout: Any, y: Any, out: Any) -> Any:
        if not self._native(dout, y, out, in_place=(out,)):
            return super()._relu_bias_grad(dout, y, out)
        with self.guard("relu_bias_grad", dout):
            return cuda.relu_bias_grad(dout, y, out, runner=self.runner)

    def _relu_backward(self, dout: Any, y: Any) -> Any:
        return self._activation("relu_backward", dout, y)

    def _sigmoid(self, x: Any) -> Any:
        return self._activation("sigmoid", x)

    def _sigmoid_backward(self, dout: Any, y: Any) -> Any:
        return self._activation("sigmoid_backward", dout, y)

    def _tanh(self, x: Any) -> Any:
        return self._activation("tanh", x)

    def _tanh_backward(self, dout: Any, y: Any) -> Any:
        return self._activation("tanh_backward", dout, y)

    def _softmax(self, x: Any) -> Any:
        if x.ndim == 0 or x.size == 0:
            return super()._softmax(x)
        return self._activation("softmax", x)

    def _softmax_backward(self, dout: Any, y: Any) -> Any:
        if dout.ndim == 0 or dout.size == 0:
            return super()._softmax_backward(dout, y)
        return self._activation("softmax_backward", dout, y)

    def _softmax_cross_entropy(self, logits: Any, target: Any, hits: Any | None = None) -> tuple[Any, Any]:
        labels = target.ndim == 1  # as the reference decides: (N,) labels, else (N, K) probabilities
        if not self._native(logits, *(() if labels else (target,)), in_place=() if hits is None else (hits,)):
            return super()._softmax_cross_entropy(logits, target, hits)
        with self.guard("softmax_cross_entropy", logits, target):
            return cuda.softmax_cross_entropy(logits, target, hits, runner=self.runner)

    # -- optimizer updates (in place) ------------------------------------------------------------------
    def _native_update(self, p: Any, g: Any, *state: Any) -> bool:
        """The CUDA update kernels take one dtype and one shape (no broadcast gradient) and update
        C-contiguous arrays; anything else goes to the reference."""
        return self._native(p, g, *state, in_place=(p, *state)) and all(a.shape == p.shape for a in (g, *state))

    def _sgd_update(self, p: Any, g: Any, velocity: Any | None, lr: Scalar, momentum: float,
                   nesterov: bool) -> None:
        state = () if velocity is None else (velocity,)
        if not self._native_update(p, g, *state):
            return super()._sgd_update(p, g, velocity, lr, momentum, nesterov)
        with self.guard("sgd_update", p):
            cuda.sgd_update(p, g, velocity, lr, momentum, nesterov, runner=self.runner)

    def _adagrad_update(self, p: Any, g: Any, sum_sq: Any, lr: Scalar, eps: float) -> None:
        if not self._native_update(p, g, sum_sq):
            return super()._adagrad_update(p, g, sum_sq, lr, eps)
        with self.guard("adagrad_update", p):
            cuda.adagrad_update(p, g, sum_sq, lr, eps, runner=self.runner)

    def _rmsprop_update(self, p: Any, g: Any, mean_sq: Any, lr: Scalar, rho: float, eps: float) -> None:
        if not self._native_update(p, g, mean_sq):
            return super()._rmsprop_update(p, g, mean_sq, lr, rho, eps)
        with self.guard("rmsprop_update", p):
            cuda.rmsprop_update(p, g, mean_sq, lr, rho, eps, runner=self.runner)

    def _adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: Scalar, beta1: float, beta2: float,
                     eps_t: Scalar) -> None:
        if not self._native_update(p, g, m, v):
            return super()._adam_update(p, g, m, v, lr_t, beta1, beta2, eps_t)
        with self.guard("adam_update", p):
            cuda.adam_update(p, g, m, v, lr_t, beta1, beta2, eps_t, runner=self.runner)


NOT_INSTALLED = "CuPy is not installed"  # the start of probe()'s reason when there is no CuPy at all
LIBRARIES_HINT = f"CuPy's [ctk] extra brings NVRTC, cuBLAS and cuRAND: {pip_install('cuda12', 'cuda13')}"


def _check_random(cupy: Any) -> None:
    """cuRAND: the generator the backend seeds (CupyBackend.seed), and one draw from it."""
    x = cupy.random.RandomState(0).standard_normal((4, 4), dtype=cupy.float32)
    if not np.isfinite(cupy.asnumpy(x)).all():
        raise ArithmeticError("its normal draws are not finite")


def _check_matmul(cupy: Any) -> None:
    """cuBLAS: a small float32 and float64 matrix product, checked against NumPy."""
    for dtype in (np.float32, np.float64):
        a = np.arange(12, dtype=dtype).reshape(3, 4)
        b = np.arange(8, dtype=dtype).reshape(4, 2) - 3
        got, want = cupy.asnumpy(cupy.matmul(cupy.asarray(a), cupy.asarray(b))), a @ b
        if not np.array_equal(got, want):
            raise ArithmeticError(f"a {np.dtype(dtype).name} matrix product gave {got.tolist()}, not {want.tolist()}")


def _check_kernels(cupy: Any) -> None:
    """NVRTC and our module: compile backprop's CUDA kernels (float32, as the backend does on first use,
    which then reuses them) and launch one."""
    x = cupy.asarray(np.array([-1.5, 0.0, 2.0], dtype=np.float32))
    got = cupy.asnumpy(cuda.relu(x))
    if not np.array_equal(got, [0.0, 0.0, 2.0]):
        raise ArithmeticError(f"relu of [-1.5, 0, 2] gave {got.tolist()}")


# What probe() checks after finding a device, in order: (what it is, check). Each runs on the GPU.
PROBE_STEPS: tuple[tuple[str, Any], ...] = (
    ("cuRAND (CuPy's random generator)", _check_random),
    ("cuBLAS (a matrix product)", _check_matmul),
    ("NVRTC compiling and launching backprop's CUDA kernels", _check_kernels),
)


def probe() -> str | None:
    """None when a CUDA device runs everything the backend uses, else the reason it cannot: CuPy
    imports and finds a device, runs one of its own kernels, creates and draws from the random
    generator (cuRAND), multiplies matrices (cuBLAS), and compiles and launches our kernels (NVRTC)."""
    if importlib.util.find_spec("cupy") is None:
        return f"{NOT_INSTALLED}: {INSTALL_HINT}"
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA device"
        if int((cupy.arange(4, dtype=cupy.float32) * 2).sum()) != 12:
            return "CuPy ran a test kernel on the GPU and got a wrong answer"
    except Exception as exc:  # any driver, runtime or compiler failure means: not usable here
        return f"CuPy is installed but CUDA does not work: {_one_line(exc)}"
    for what, check in PROBE_STEPS:
        try:
            check(cupy)
        except Exception as exc:  # a missing library (libcurand, libcublas, libnvrtc), a compile error, ...
            return f"{what} failed: {_one_line(exc)}; {LIBRARIES_HINT}"
    return None


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line: the message's first line and, from the rest (a compile log), the
    first line that reports an error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    shown = lines[:1] + [next((line for line in lines[1:] if "error" in line.lower()), "")]
    text = " ... ".join(filter(None, shown))
    if len(lines) > len(list(filter(None, shown))):
        text += " [...]"
    return f"{type(exc).__name__}: {text}".strip()
