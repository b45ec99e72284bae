"""The CUDA kernels of the CuPy backend: sources, lazy compilation, launches.

The CUDA code lives in ``kernels/cuda/*.cu`` (package data) as C++ templates over the float type; this
module joins the sources into one translation unit, compiles it with NVRTC through
``cupy.RawModule`` on first use, once per (dtype, device), and launches the kernels with bounded
grids (every kernel walks its elements with a 64-bit grid-stride loop).

Each public function mirrors the kernel of the same name in :mod:`backprop.kernels.reference`
(without its ``xp`` argument) and returns the same values, shapes and dtypes, except that
``maxpool2d``'s argmax is always int32. It launches the ``__global__`` kernel of that name, or, where
it needs two entry points, ``<name>_<variant>`` (``softmax_cross_entropy_labels`` and ``_probs``,
``sgd_update_momentum``), as :mod:`backprop.kernels.numba_cpu` names its kernels. Both order the
parameters alike: arrays first (inputs, then outputs; an update's as the reference orders them), then
sizes (CUDA only), then scalars. The functions take float32 or float64 arrays of one dtype; the CuPy
backend checks that before calling them and falls back to the reference otherwise.

All launches go through a *runner*: by default a :class:`CupyRunner`. The CPU test harness
(tests/cuda_harness) passes a runner of its own that runs the same kernel sources compiled by g++, so
the argument lists built here are tested too. Nothing here imports CuPy at import time.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backprop.kernels.arrays import Scalar
from backprop.kernels.reference import conv_output_size

Pair = tuple[int, int]

SOURCE_DIR = Path(__file__).with_name("cuda")
# Concatenated in this order into one translation unit; their `#include "common.cuh"` lines are
# dropped, since NVRTC gets the text, not the folder.
SOURCE_FILES = ("common.cuh", "conv.cu", "pool.cu", "activations.cu", "softmax.cu", "optim.cu")
KERNELS = ("im2col", "col2im", "maxpool2d", "maxpool2d_backward", "add_bias_relu", "relu_bias_grad",
           "relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
           "softmax", "softmax_backward", "softmax_cross_entropy_labels", "softmax_cross_entropy_probs",
           "sgd_update", "sgd_update_momentum", "adagrad_update", "rmsprop_update", "adam_update")
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
COMPILE_OPTIONS = ("-std=c++17",)

_INCLUDE = re.compile(r'^\s*#\s*include\s+"common\.cuh"\s*$', re.MULTILINE)


def source() -> str:
    """The full CUDA source, as NVRTC compiles it."""
    parts = []
    for name in SOURCE_FILES:
        text = (SOURCE_DIR / name).read_text(encoding="utf-8")
        parts.append(f"// ---- {name}\n" + _INCLUDE.sub("", text))
    return "\n".join(parts)


def name_expression(kernel: str, dtype: Any) -> str:
    """The C++ name of one kernel's instantiation, e.g. ``im2col<float>``."""
    return f"{kernel}<{C_TYPES[np.dtype(dtype)]}>"


def name_expressions(dtype: Any) -> list[str]:
    return [name_expression(k, dtype) for k in KERNELS]


_compiled: dict[tuple[str, int], dict[str, Any]] = {}
_sm_count: dict[int, int] = {}
_compile_lock = threading.Lock()


def compiled_kernels(dtype: Any) -> dict[str, Any]:
    """Kernel name -> ``cupy.RawKernel`` for ``dtype`` on the current device: compiled by NVRTC on the
    first call for that (dtype, device), then cached for the process. (CuPy's on-disk cache is skipped
    when ``name_expressions`` are given, so each new process compiles again: a cost the cold-start
    figures include.)

    CuPy compiles with ``-ftz=true`` whatever the options: float32 subnormal inputs and results are
    flushed to zero on the GPU (relu of 1e-40 gives 0), where the NumPy reference keeps them."""
    import cupy

    dt = np.dtype(dtype)
    if dt not in C_TYPES:
        raise TypeError(f"the CUDA kernels take float32 or float64, not {dt}")
    key = (dt.name, cupy.cuda.runtime.getDevice())
    found = _compiled.get(key)
    if found is not None:
        return found
    with _compile_lock:
        if key not in _compiled:
            names = name_expressions(dt)
            try:
                module = cupy.RawModule(code=source(), options=COMPILE_OPTIONS, name_expressions=names)
                _compiled[key] = {k: module.get_function(n) for k, n in zip(KERNELS, names, strict=True)}
            except cupy.cuda.compiler.CompileException as exc:
                raise RuntimeError(f"backprop: compiling the CUDA kernels for {dt.name} failed:\n{exc}") from exc
        return _compiled[key]


class Runner(Protocol):
    """What the functions below need: an array module, and a way to run a kernel over ``total``
    elements with arguments (arrays and NumPy scalars of the exact C parameter types)."""

    @property
    def xp(self) -> Any: ...  # the array module (cupy; numpy in the CPU harness)

    def launch(self, kernel: str, dtype: Any, total: int, args: tuple) -> None: ...


class CupyRunner:
    """Launches the compiled kernels with ``block`` threads per block and at most ``blocks_per_sm``
    blocks per multiprocessor, or ``max_blocks`` blocks when set (tests set it small to exercise the
    grid-stride loops)."""

    block = 256
    blocks_per_sm = 32

    def __init__(self, max_blocks: int | None = None) -> None:
        self.max_blocks = max_blocks

    @property
    def xp(self) -> Any:
        import cupy

        return cupy

    def grid_limit(self) -> int:
        """The most blocks one launch uses on the current device."""
        if self.max_blocks is not None:
            return self.max_blocks
        import cupy

        device = cupy.cuda.runtime.getDevice()
        if device not in _sm_count:
            _sm_count[device] = cupy.cuda.Device(device).attributes["MultiProcessorCount"]
        return _sm_count[device] * self.blocks_per_sm

    def function(self, kernel: str, dtype: Any) -> Any:
        """The compiled kernel, called as ``function(grid, block, args)`` like a ``cupy.RawKernel``."""
        return compiled_kernels(dtype)[kernel]

    def launch(self, kernel: str, dtype: Any, total: int, args: tuple) -> None:
        if total <= 0:
            return
        function = self.function(kernel, dtype)
        grid = min(math.ceil(total / self.block), self.grid_limit())
        function((grid,), (self.block,), args)


_default: list[CupyRunner] = []


def default_runner() -> CupyRunner:
    if not _default:
        _default.append(CupyRunner())
    return _default[0]


# -- helpers ------------------------------------------------------------------------------------

def _i64(*values: int) -> tuple[np.int64, ...]:
    return tuple(np.int64(v) for v in values)


def _element_strides(a: Any) -> tuple[int, ...] | None:
    """Strides of ``a`` in elements, or None when they are negative or not whole elements."""
    strides = []
    for s in a.strides:
        if s < 0 or s % a.itemsize:
            return None
        strides.append(s // a.itemsize)
    return tuple(strides)


def _window(x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> tuple[int, ...]:
    """(n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow) of a window sliding over NCHW images."""
    n, c, h, w = x_shape
    oh = conv_output_size(h, kernel[0], stride[0], pad[0])
    ow = conv_output_size(w, kernel[1], stride[1], pad[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kernel} window with padding {pad} does not fit in a {h}x{w} image")
    return (n, c, h, w, *kernel, *stride, *pad, oh, ow)


def _same(what: str, a: Any, shape: tuple[int, ...], dtype: Any) -> None:
    if tuple(a.shape) != tuple(shape) or a.dtype != dtype:
        raise ValueError(f"{what} must be {np.dtype(dtype)} {tuple(shape)}, got {a.dtype} {tuple(a.shape)}")


def _in_place(what: str, a: Any, shape: tuple[int, ...], dtype: Any) -> None:
    _same(what, a, shape, dtype)
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} is updated in place and must be C-contiguous")


def _update_operands(r: Runner, p: Any, g: Any, **state: Any) -> Any:
    """Check an optimizer update's operands (the parameter and its state updated in place, the
    gradient of the same shape and dtype); returns the gradient, C-contiguous."""
    _in_place("the parameter", p, p.shape, p.dtype)
    for name, a in state.items():
        _in_place(name, a, p.shape, p.dtype)
    g = r.xp.ascontiguousarray(g)
    _same("the gradient", g, p.shape, p.dtype)
    return g


# -- convolution lowering -----------------------------------------------------------------------

def im2col(x: Any, kernel: Pair, stride: Pair, pad: Pair, out: Any | None = None,
           runner: Runner | None = None) -> Any:
    """The (N*OH*OW, C*KH*KW) patch matrix of NCHW images ``x``.

    By default the matrix has the reference's memory layout (the transpose of a C-contiguous
    (C*KH*KW, N*OH*OW) array); ``out`` may be any (N*OH*OW, C*KH*KW) array of x's dtype with
    positive strides, e.g. a C-contiguous one. (CuPy passes a kernel only the data pointer of an array,
    so the strides go along as arguments.)
    """
    r = runner or default_runner()
    x = r.xp.ascontiguousarray(x)
    geometry = _window(x.shape, kernel, stride, pad)
    n, c, _, _, kh, kw, _, _, _, _, oh, ow = geometry
    if out is None:
        out = r.xp.empty((c * kh * kw, n * oh * ow), dtype=x.dtype).T
    _same("im2col's out", out, (n * oh * ow, c * kh * kw), x.dtype)
    strides = _element_strides(out)
    # (an empty out may have zero strides: a (C*KH*KW, 0) array's first stride is 0, so is its transpose's second)
    if strides is None or (out.size and any(s == 0 and d > 1 for s, d in zip(strides, out.shape, strict=True))):
        raise ValueError("im2col's out needs positive strides of whole elements (no broadcast views)")
    r.launch("im2col", x.dtype, out.size, (x, out, *_i64(*geometry, *strides)))
    return out


def col2im(col: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair,
           runner: Runner | None = None) -> Any:
    """Adjoint of :func:`im2col`: the NCHW image gradient; ``col`` may have any memory layout."""
    r = runner or default_runner()
    geometry = _window(tuple(x_shape), kernel, stride, pad)
    n, c, h, w, kh, kw, _, _, _, _, oh, ow = geometry
    if tuple(col.shape) != (n * oh * ow, c * kh * kw):
        raise ValueError(f"col2im: col must be {(n * oh * ow, c * kh * kw)}, got {tuple(col.shape)}")
    strides = _element_strides(col)
    if strides is None:
        col = r.xp.ascontiguousarray(col)
        strides = _element_strides(col)
        assert strides is not None  # a C-contiguous array's strides are whole elements
    img = r.xp.empty((n, c, h, w), dtype=col.dtype)
    r.launch("col2im", col.dtype, img.size, (col, img, *_i64(*geometry, *strides)))
    return img


# -- pooling ------------------------------------------------------------------------------------

def maxpool2d(x: Any, kernel: Pair, stride: Pair, pad: Pair, relu: bool = False,
              runner: Runner | None = None) -> tuple[Any, Any]:
    """(out, argmax): the max of each window (padding is -inf) and its offset ky*KW+kx, as int32; with
    ``relu``, out is the ReLU of the max (``maxpool2d_relu``)."""
    r = runner or default_runner()
    x = r.xp.ascontiguousarray(x)
    geometry = _window(x.shape, kernel, stride, pad)
    n, c, oh, ow = geometry[0], geometry[1], geometry[10], geometry[11]
    out = r.xp.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = r.xp.empty((n, c, oh, ow), dtype=np.int32)
    r.launch("maxpool2d", x.dtype, out.size, (x, out, argmax, *_i64(*geometry), np.int32(relu)))
    return out, argmax


def maxpool2d_backward(dout: Any, argmax: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair,
                       y: Any | None = None, runner: Runner | None = None) -> Any:
    """The input gradient: each output's gradient goes to the input its argmax names. With ``y`` (the
    output of ``maxpool2d(..., relu=True)``) the gradient is masked by ``y > 0`` on the way
    (``maxpool2d_relu_backward``)."""
    r = runner or default_runner()
    geometry = _window(tuple(x_shape), kernel, stride, pad)
    n, c, h, w, oh, ow = *geometry[:4], geometry[10], geometry[11]
    dout = r.xp.ascontiguousarray(dout)
    argmax = r.xp.ascontiguousarray(argmax, dtype=np.int32)
    _same("maxpool2d_backward's dout", dout, (n, c, oh, ow), dout.dtype)
    _same("maxpool2d_backward's argmax", argmax, (n, c, oh, ow), np.int32)
    if y is not None:
        y = r.xp.ascontiguousarray(y)
        _same("maxpool2d_backward's y", y, (n, c, oh, ow), dout.dtype)
    dx = r.xp.empty((n, c, h, w), dtype=dout.dtype)
    r.launch("maxpool2d_backward", dout.dtype, dx.size,
             (dout, dout if y is None else y, argmax, dx, *_i64(*geometry), np.int32(y is not None)))
    return dx


# -- activations --------------------------------------------------------------------------------

def _unary(kernel: str, x: Any, runner: Runner | None) -> Any:
    r = runner or default_runner()
    x = r.xp.ascontiguousarray(x)
    y = r.xp.empty(x.shape, dtype=x.dtype)
    r.launch(kernel, x.dtype, x.size, (x, y, np.int64(x.size)))
    return y


def _binary(kernel: str, dout: Any, y: Any, runner: Runner | None) -> Any:
    r = runner or default_runner()
    dout, y = r.xp.ascontiguousarray(dout), r.xp.ascontiguousarray(y)
    _same(f"{kernel}'s y", y, dout.shape, dout.dtype)
    dx = r.xp.empty(dout.shape, dtype=dout.dtype)
    r.launch(kernel, dout.dtype, dx.size, (dout, y, dx, np.int64(dx.size)))
    return dx


def _channels(a: Any) -> tuple[int, int, int]:
    """(outer, channels, inner) of an array whose channel axis is axis 1."""
    channels = a.shape[1]
    inner = math.prod(a.shape[2:])
    return a.size // max(1, channels * inner), channels, inner


def add_bias_relu(y: Any, b: Any, runner: Runner | None = None) -> None:
    """In place: y = relu(y + b) over axis 1 (y C-contiguous)."""
    r = runner or default_runner()
    _in_place("add_bias_relu's y", y, y.shape, y.dtype)
    b = r.xp.ascontiguousarray(b)
    _same("add_bias_relu's b", b, y.shape[1:2], y.dtype)
    _, channels, inner = _channels(y)
    r.launch("add_bias_relu", y.dtype, y.size, (y, b, *_i64(y.size, channels, inner)))


def relu_bias_grad(dout: Any, y: Any, out: Any, runner: Runner | None = None) -> Any:
    """dz = (y > 0) * dout, returned, and its sums per channel (axis 1) written into ``out``."""
    r = runner or default_runner()
    dout, y = r.xp.ascontiguousarray(dout), r.xp.ascontiguousarray(y)
    _same("relu_bias_grad's y", y, dout.shape, dout.dtype)
    _in_place("relu_bias_grad's out", out, dout.shape[1:2], dout.dtype)
    outer, channels, inner = _channels(dout)
    dz = r.xp.empty(dout.shape, dtype=dout.dtype)
    r.launch("relu_bias_grad", dout.dtype, channels, (dout, y, dz, out, *_i64(outer, channels, inner)))
    return dz


def relu(x: Any, runner: Runner | None = None) -> Any:
    return _unary("relu", x, runner)


def relu_backward(dout: Any, y: Any, runner: Runner | None = None) -> Any:
    return _binary("relu_backward", dout, y, runner)


def sigmoid(x: Any, runner: Runner | None = None) -> Any:
    return _unary("sigmoid", x, runner)


def sigmoid_backward(dout: Any, y: Any, runner: Runner | None = None) -> Any:
    return _binary("sigmoid_backward", dout, y, runner)


def tanh(x: Any, runner: Runner | None = None) -> Any:
    return _unary("tanh", x, runner)


def tanh_backward(dout: Any, y: Any, runner: Runner | None = None) -> Any:
    return _binary("tanh_backward", dout, y, runner)


def _rows(x: Any) -> tuple[int, int]:
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"softmax needs a non-empty last axis, got shape {tuple(x.shape)}")
    return x.size // x.shape[-1], x.shape[-1]


def softmax(x: Any, runner: Runner | None = None) -> Any:
    """Softmax over the last axis."""
    r = runner or default_runner()
    x = r.xp.ascontiguousarray(x)
    rows, cols = _rows(x)
    y = r.xp.empty(x.shape, dtype=x.dtype)
    r.launch("softmax", x.dtype, rows, (x, y, *_i64(rows, cols)))
    return y


def softmax_backward(dout: Any, y: Any, runner: Runner | None = None) -> Any:
    r = runner or default_runner()
    dout, y = r.xp.ascontiguousarray(dout), r.xp.ascontiguousarray(y)
    _same("softmax_backward's y", y, dout.shape, dout.dtype)
    rows, cols = _rows(dout)
    dx = r.xp.empty(dout.shape, dtype=dout.dtype)
    r.launch("softmax_backward", dout.dtype, rows, (dout, y, dx, *_i64(rows, cols)))
    return dx


def softmax_cross_entropy(logits: Any, target: Any, hits: Any | None = None,
                          runner: Runner | None = None) -> tuple[Any, Any]:
    """(mean loss as a 0-d array, dlogits) against integer labels (N,) or probabilities (N, K) of
    the logits' dtype. A label outside [0, K) makes the loss and its gradient row NaN, as in the
    reference. With ``hits`` (N,), each row's correct prediction is written there in the same pass."""
    r = runner or default_runner()
    logits = r.xp.ascontiguousarray(logits)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"softmax_cross_entropy needs (N, K) logits, got shape {tuple(logits.shape)}")
    n, k = logits.shape
    t = logits.dtype.type
    grad = r.xp.empty((n, k), dtype=logits.dtype)
    row_loss = r.xp.empty((n,), dtype=logits.dtype)
    if target.ndim == 1:  # labels, as the reference decides (an integer (N, K) target is probabilities)
        kernel = "softmax_cross_entropy_labels"
        target = r.xp.ascontiguousarray(target, dtype=np.int64)
        _same("integer labels", target, (n,), np.int64)
    else:
        kernel = "softmax_cross_entropy_probs"
        target = r.xp.ascontiguousarray(target)
        _same("probability targets", target, (n, k), logits.dtype)
    if hits is not None:
        _in_place("softmax_cross_entropy's hits", hits, (n,), logits.dtype)
    r.launch(kernel, logits.dtype, n, (logits, target, grad, row_loss, row_loss if hits is None else hits,
                                       *_i64(n, k), t(n), np.int32(hits is not None)))
    return r.xp.asarray(row_loss.mean()), grad  # one reduction launch: CuPy divides by n in its post-map


# -- optimizer updates (in place) ------------------------------------------------------------------

def _step_scalar(r: Runner, what: str, value: Scalar, p: Any) -> Any:
    """A step scalar as the kernels read it, from device memory: a 0-d array of p's dtype as it is, a
    number put into one (callers who update many parameters keep theirs on the device, as optimizers do)."""
    if hasattr(value, "shape"):
        _same(what, value, (), p.dtype)
        return r.xp.ascontiguousarray(value)
    return r.xp.full((), value, dtype=p.dtype)


def sgd_update(p: Any, g: Any, velocity: Any | None, lr: Scalar, momentum: float, nesterov: bool,
               runner: Runner | None = None) -> None:
    r = runner or default_runner()
    g = _update_operands(r, p, g, **({} if velocity is None else {"the velocity": velocity}))
    lr = _step_scalar(r, "lr", lr, p)
    if velocity is None:
        r.launch("sgd_update", p.dtype, p.size, (p, g, lr, np.int64(p.size)))
        return
    r.launch("sgd_update_momentum", p.dtype, p.size,
             (p, g, velocity, lr, np.int64(p.size), p.dtype.type(momentum), np.int32(bool(nesterov))))


def adagrad_update(p: Any, g: Any, sum_sq: Any, lr: Scalar, eps: float, runner: Runner | None = None) -> None:
    r = runner or default_runner()
    g = _update_operands(r, p, g, sum_sq=sum_sq)
    t = p.dtype.type
    r.launch("adagrad_update", p.dtype, p.size, (p, g, sum_sq, _step_scalar(r, "lr", lr, p), np.int64(p.size), t(eps)))


def rmsprop_update(p: Any, g: Any, mean_sq: Any, lr: Scalar, rho: float, eps: float,
                   runner: Runner | None = None) -> None:
    r = runner or default_runner()
    g = _update_operands(r, p, g, mean_sq=mean_sq)
    t = p.dtype.type
    r.launch("rmsprop_update", p.dtype, p.size,
             (p, g, mean_sq, _step_scalar(r, "lr", lr, p), np.int64(p.size), t(rho), t(1 - rho), t(eps)))


def adam_update(p: Any, g: Any, m: Any, v: Any, lr_t: Scalar, beta1: float, beta2: float, eps_t: Scalar,
                runner: Runner | None = None) -> None:
    """Adam with its bias corrections folded into ``lr_t`` and ``eps_t`` (``reference.adam_scalars``)."""
    r = runner or default_runner()
    g = _update_operands(r, p, g, m=m, v=v)
    t = p.dtype.type
    r.launch("adam_update", p.dtype, p.size,
             (p, g, m, v, _step_scalar(r, "lr_t", lr_t, p), _step_scalar(r, "eps_t", eps_t, p), np.int64(p.size),
              t(beta1), t(1 - beta1), t(beta2), t(1 - beta2)))
