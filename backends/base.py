"""The Backend interface: array creation, randomness and every hot kernel, written against ``self.xp``.

A backend is an array module plus a default float dtype. This base class is complete on its own: with
``xp = numpy`` it is the NumPy reference backend, and faster backends subclass it and override only the
kernels they speed up (the Thinc pattern), so every override has a reference to be tested against.

Each public kernel method checks its arguments (backend, dtype, byte order, shapes, window geometry:
metadata only, never a value, which on a GPU would wait for the device) and then calls its ``_name``
implementation; backends override the implementations, so every backend refuses bad arguments alike
instead of failing inside compiled code or reading past an array's end.
"""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import numpy as np

from backprop.kernels import reference as ref
from backprop.kernels.arrays import Array, Scalar

Pair = tuple[int, int]
DTypeLike = Any

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Every Backend instance alive, registered or not: manual_seed seeds them all.
LIVE_BACKENDS: weakref.WeakSet[Backend] = weakref.WeakSet()


class ConvCache(NamedTuple):
    """What ``conv2d_forward`` keeps for ``conv2d_backward``: the patch matrix and the input's geometry."""

    col: Array  # im2col(x): (N*OH*OW, C*KH*KW)
    x_shape: tuple[int, ...]
    stride: Pair
    pad: Pair


def _is_int(v: Any) -> bool:
    return type(v) is int or isinstance(v, np.integer)


def _window(kernel_name: str, x_shape: Any, kernel: Any, stride: Any, pad: Any) -> Pair:
    """Refuse a window a kernel cannot slide over NCHW images of ``x_shape`` (sizes >= 0; a kernel and
    stride of ints >= 1, padding >= 0, a window that fits the padded image); returns (OH, OW)."""
    if len(x_shape) != 4 or not all(_is_int(v) and v >= 0 for v in x_shape):
        raise ValueError(f"{kernel_name} takes NCHW images, got shape {tuple(x_shape)}")
    for what, pair, low in (("kernel", kernel, 1), ("stride", stride, 1), ("pad", pad, 0)):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_int(v) and v >= low for v in pair)):
            raise ValueError(f"{kernel_name}: {what} must be a pair of ints >= {low}, got {pair!r}")
    h, w = x_shape[2] + 2 * pad[0], x_shape[3] + 2 * pad[1]
    if h < kernel[0] or w < kernel[1]:
        raise ValueError(f"{kernel_name}: a {kernel[0]}x{kernel[1]} window does not fit in a {x_shape[2]}x"
                         f"{x_shape[3]} image padded by {tuple(pad)}")
    return (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1


def _shape(kernel_name: str, what: str, a: Array, shape: tuple[int, ...]) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{kernel_name}: {what} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def _ndim(kernel_name: str, what: str, a: Array, ndim: int, at_least: bool = False) -> None:
    if (a.ndim < ndim) if at_least else (a.ndim != ndim):
        raise ValueError(f"{kernel_name}: {what} must have {'at least ' if at_least else ''}{ndim} axes, got "
                         f"shape {tuple(a.shape)}")


def as_float_dtype(dtype: DTypeLike) -> np.dtype:
    """Normalize a dtype request; only float32 and float64 are supported."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"unsupported dtype {dt}: backprop computes in float32 (default) or float64")
    return dt


class Backend:
    """Arrays, a seeded generator and the hot kernels of one device, in one float dtype.

    Instances come from :func:`backprop.backends.get_backend`; ``dtype`` is the dtype new parameters and
    converted data get (float32 unless float64 is asked for). Kernels keep the dtype of their inputs.
    """

    name: str = "base"
    xp: Any = np

    def __init__(self, dtype: DTypeLike = np.float32, seed: int | None = None) -> None:
        self.dtype = as_float_dtype(dtype)
        self._family: dict[np.dtype, Backend] = {self.dtype: self}
        self.seed(seed)
        LIVE_BACKENDS.add(self)

    def with_dtype(self, dtype: DTypeLike) -> Backend:
        """This instance's sibling computing in ``dtype``: the same class, built the same way (one per
        dtype). :func:`~backprop.backends.get_backend` uses it for instances it did not create itself
        (it returns its own instances of the same name for those it did)."""
        dt = as_float_dtype(dtype)
        if dt not in self._family:
            sibling = self._sibling(dt)
            sibling._family = self._family
            self._family[dt] = sibling
        return self._family[dt]

    def _sibling(self, dtype: np.dtype) -> Backend:
        return type(self)(dtype, seed=self.seed_value)

    def __deepcopy__(self, memo: dict) -> Backend:
        return self  # one instance per (name, dtype): copies of a model share it

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.dtype.name}>"

    # -- arrays ---------------------------------------------------------------------------------
    def is_array(self, a: Array) -> bool:
        """True when ``a`` is an array that lives on this backend's device (for a host backend, not an
        ndarray subclass that lives on a GPU, as the CPU tests' emulated CUDA arrays do)."""
        return isinstance(a, self.xp.ndarray) and (self.xp is not np or not hasattr(a, "__cuda_array_interface__"))

    def asarray(self, a: Array, dtype: DTypeLike | None = None) -> Array:
        """Put ``a`` on this backend. Floating data get ``dtype`` (default: the backend's dtype); other
        data keep their dtype in native byte order (big-endian labels from a file become native, once,
        here, on the way to the kernels)."""
        if hasattr(a, "__cuda_array_interface__") and self.xp is np:
            a = a.get()  # a CuPy array coming back to the host
        if dtype is None:
            dt = np.dtype(a.dtype) if hasattr(a, "dtype") else np.asarray(a).dtype
            dtype = self.dtype if dt.kind == "f" else dt.newbyteorder("=")
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Array) -> np.ndarray:
        """A host NumPy copy (or view, on the CPU) of a backend array."""
        return np.asarray(a)

    def check_array(self, a: Array, what: str, dtype: DTypeLike | None = None, model_dtype: bool = False) -> None:
        """Refuse, naming the fix, an array of another backend, or of another dtype than ``dtype``
        (default: float32 or float64), byte order included; ``model_dtype``: ``dtype`` is the model's,
        and converting the model is a fix too. Metadata only: it runs on every call of every layer and
        kernel."""
        if self._fits(a, dtype):
            return
        if not self.is_array(a):
            kind = f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"
            raise TypeError(f"{what} is a {kind}, but this runs on the {self.name!r} backend: move it "
                            f"with backend.asarray(x) (or move the model with model.to(...))")
        expected = np.dtype(dtype).name if dtype is not None else "float32 or float64"
        order = "" if a.dtype.isnative else " (non-native byte order)"
        hint = f" or convert the model with model.to(dtype={a.dtype.name!r})" if (
            model_dtype and a.dtype in FLOAT_DTYPES) else ""
        raise TypeError(f"{what} has dtype {a.dtype}{order}, expected {expected}: cast it with "
                        f"x.astype({np.dtype(dtype or self.dtype).name!r}){hint}")

    def _fits(self, a: Array, dtype: DTypeLike | None) -> bool:
        """What :meth:`check_array` lets through (the check alone, for the kernels' hot path)."""
        return self.is_array(a) and ((a.dtype in FLOAT_DTYPES) if dtype is None else a.dtype == dtype)

    def zeros(self, shape: Any, dtype: DTypeLike | None = None) -> Array:
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def empty(self, shape: Any, dtype: DTypeLike | None = None) -> Array:
        return self.xp.empty(shape, dtype=self.dtype if dtype is None else dtype)

    def guard(self, operation: str, *arrays: Array) -> AbstractContextManager[None]:
        """A context in which running out of device memory raises an error that names ``operation``
        (and the shapes of ``arrays``), the bytes asked for and the memory free. The host needs none."""
        return nullcontext()

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU. Call it before reading a clock."""

    def can_hold(self, nbytes: int) -> bool:
        """Whether a dataset of ``nbytes`` may stay on this backend for a whole run (on the CPU it is
        already in host memory, so always)."""
        return True

    # -- randomness -----------------------------------------------------------------------------
    def seed(self, seed: int | None) -> None:
        """Restart the generator: the same seed gives the same numbers on the same backend (and a
        sibling made later in another dtype starts from the same seed)."""
        self.seed_value = seed
        self.rng = self._generator(seed)

    def _generator(self, seed: int | None) -> Any:
        return self.xp.random.default_rng(seed)

    def draw_seed(self) -> int:
        """A seed for a host-side generator (a DataLoader's shuffling), drawn from this backend's seeded
        one, so that :func:`manual_seed` fixes it too (CuPy's generator has ``randint``, not ``integers``)."""
        draw = getattr(self.rng, "integers", None) or self.rng.randint
        return int(draw(0, 2**31))

    def standard_normal(self, shape: Any, dtype: DTypeLike | None = None) -> Array:
        return self.rng.standard_normal(shape, dtype=self.dtype if dtype is None else dtype)

    def uniform(self, shape: Any, dtype: DTypeLike | None = None) -> Array:
        """Uniform samples in [0, 1)."""
        return self.rng.random(shape, dtype=self.dtype if dtype is None else dtype)

    # -- argument checks, shared by every backend's kernels ---------------------------------------
    def _operands(self, kernel: str, **arrays: Array | None) -> None:
        """Refuse operands that are not this backend's float32 or float64 arrays of one dtype (the
        first's), native byte order; None is an absent optional one."""
        dtype = None
        for name, a in arrays.items():
            if a is not None:
                if not self._fits(a, dtype):
                    self.check_array(a, f"{kernel}'s {name}", dtype)  # raises, naming the operand
                dtype = a.dtype

    def _integers(self, kernel: str, what: str, a: Array) -> None:
        """Refuse an index array (labels, argmax) that is not this backend's, integer, native byte order."""
        if not (self.is_array(a) and a.dtype.kind in "iu" and a.dtype.isnative):
            got = f"{a.dtype} array" if self.is_array(a) else type(a).__name__
            raise TypeError(f"{kernel}'s {what} must be an integer array of this backend, native byte order, "
                            f"got a {got}")

    # -- kernels: matrix products and convolution lowering --------------------------------------
    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        self._operands("matmul", a=a, b=b, out=out)
        return self._matmul(a, b, out)

    def _matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        return self.xp.matmul(a, b, out=out)

    def im2col(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> Array:
        self._operands("im2col", x=x)
        _window("im2col", x.shape, kernel, stride, pad)
        return self._im2col(x, kernel, stride, pad)

    def _im2col(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> Array:
        return ref.im2col(self.xp, x, kernel, stride, pad)

    def col2im(self, col: Array, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Array:
        self._operands("col2im", col=col)
        oh, ow = _window("col2im", x_shape, kernel, stride, pad)
        n, c = x_shape[:2]
        _shape("col2im", "col", col, (n * oh * ow, c * kernel[0] * kernel[1]))
        return self._col2im(col, tuple(x_shape), kernel, stride, pad)

    def _col2im(self, col: Array, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Array:
        return ref.col2im(self.xp, col, x_shape, kernel, stride, pad)

    def _whole_batch(self, pixels: int, patch_columns: int) -> bool:
        """Whether a convolution's products run over the whole batch at once rather than per image.

        With fewer output pixels per image than patch columns (OH*OW < C*KH*KW), per-image products are
        small and many, and the transposed copies that whole-batch products need are small: whole-batch
        products win, forward and backward (measured on the CPU, in bench/results/). Otherwise per-image
        products avoid those copies, and their operands and results are views in NCHW order."""
        return pixels < patch_columns

    def conv2d_forward(self, x: Array, W: Array, b: Array, stride: Pair, pad: Pair) -> tuple[Array, ConvCache]:
        """Convolution of NCHW ``x`` with ``W`` (O, C, KH, KW) plus ``b`` (O,): im2col, one matrix
        product with W as an (O, C*KH*KW) matrix, and the bias. Returns the output and the cache
        ``conv2d_backward`` takes."""
        self._operands("conv2d_forward", x=x, W=W, b=b)
        _ndim("conv2d_forward", "W", W, 4)
        _window("conv2d_forward", x.shape, W.shape[2:], stride, pad)
        _shape("conv2d_forward", "W", W, (W.shape[0], x.shape[1], *W.shape[2:]))
        _shape("conv2d_forward", "b", b, W.shape[:1])
        return self._conv2d_forward(x, W, b, stride, pad)

    def _conv2d_forward(self, x: Array, W: Array, b: Array, stride: Pair, pad: Pair) -> tuple[Array, ConvCache]:
        n, o = x.shape[0], W.shape[0]
        oh = ref.conv_output_size(x.shape[2], W.shape[2], stride[0], pad[0])
        ow = ref.conv_output_size(x.shape[3], W.shape[3], stride[1], pad[1])
        col = self._im2col(x, W.shape[2:], stride, pad)  # (N*OH*OW, CKK)
        ckk = col.shape[1]
        w = W.reshape(o, ckk)
        if self._whole_batch(oh * ow, ckk):
            # (O, CKK) @ (CKK, N*OH*OW), then the bias added on the way into NCHW order.
            rows = self._matmul(w, col.T).reshape(o, n, oh * ow)
            out = self.empty((n, o, oh * ow), dtype=x.dtype)
            self.xp.add(rows.transpose(1, 0, 2), b[:, None], out=out)
        else:
            # One (O, CKK) @ (CKK, OH*OW) product per image (a batched matmul): the output comes out
            # NCHW and contiguous, and with im2col's column-major patch matrix the operands are views.
            out = self._matmul(w, col.reshape(n, oh * ow, ckk).transpose(0, 2, 1))
            self._add_bias(out, b)
        return out.reshape(n, o, oh, ow), ConvCache(col, tuple(x.shape), stride, pad)

    def conv2d_backward(self, dout: Array, cache: ConvCache, W: Array, dW: Array, db: Array,
                        need_dx: bool = True) -> Array | None:
        """Write the gradients of ``W`` and ``b`` into ``dW`` and ``db`` (in place) and return the input's
        gradient, or None with ``need_dx=False`` (a first layer's, which nobody uses: a GEMM and a
        col2im saved)."""
        self._operands("conv2d_backward", dout=dout, W=W, dW=dW, db=db)
        _ndim("conv2d_backward", "W", W, 4)
        oh, ow = _window("conv2d_backward", cache.x_shape, W.shape[2:], cache.stride, cache.pad)
        _shape("conv2d_backward", "dout", dout, (cache.x_shape[0], W.shape[0], oh, ow))
        _shape("conv2d_backward", "dW", dW, W.shape)
        _shape("conv2d_backward", "db", db, W.shape[:1])
        return self._conv2d_backward(dout, cache, W, dW, db, need_dx)

    def _conv2d_backward(self, dout: Array, cache: ConvCache, W: Array, dW: Array, db: Array,
                         need_dx: bool = True) -> Array | None:
        n, o, oh, ow = dout.shape
        pixels = oh * ow
        ckk = cache.col.shape[1]
        dout = dout.reshape(n, o, pixels)  # a view of a contiguous gradient
        self._bias_grad(dout, db)
        rows = None
        if self._whole_batch(pixels, ckk):  # dout as one (O, N*OH*OW) matrix
            rows = self.xp.ascontiguousarray(dout.transpose(1, 0, 2)).reshape(o, n * pixels)
            self._matmul(rows, cache.col, out=dW.reshape(o, ckk))
        else:  # dW = sum over images of dout[n] @ col[n]
            self._matmul(dout, cache.col.reshape(n, pixels, ckk)).sum(axis=0, out=dW.reshape(o, ckk))
        if not need_dx:
            return None
        # dcol = W^T @ dout, in the (CKK, N*OH*OW) layout im2col uses, so that col2im reads it in order.
        wt = W.reshape(o, ckk).T
        if rows is not None:
            dcol = self._matmul(wt, rows)
        else:  # one product per image, each written straight into its place in that layout
            dcol = self.empty((ckk, n, pixels), dtype=dout.dtype)
            self._matmul(wt, dout, out=dcol.transpose(1, 0, 2))
            dcol = dcol.reshape(ckk, n * pixels)
        return self._col2im(dcol.T, cache.x_shape, W.shape[2:], cache.stride, cache.pad)

    def maxpool2d(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Array, Array]:
        self._operands("maxpool2d", x=x)
        _window("maxpool2d", x.shape, kernel, stride, pad)
        return self._maxpool2d(x, kernel, stride, pad)

    def _maxpool2d(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Array, Array]:
        return ref.maxpool2d(self.xp, x, kernel, stride, pad)

    def _pool_gradient(self, kernel_name: str, dout: Array, argmax: Array, x_shape: tuple[int, ...],
                       kernel: Pair, stride: Pair, pad: Pair, y: Array | None = None) -> None:
        """The checks of both pooling gradients: dout (and the pooled ``y``) and argmax of the pooled shape."""
        self._operands(kernel_name, dout=dout, y=y)
        oh, ow = _window(kernel_name, x_shape, kernel, stride, pad)
        pooled = (*x_shape[:2], oh, ow)
        _shape(kernel_name, "dout", dout, pooled)
        if y is not None:
            _shape(kernel_name, "y", y, pooled)
        self._integers(kernel_name, "argmax", argmax)
        _shape(kernel_name, "argmax", argmax, pooled)

    def maxpool2d_backward(self, dout: Array, argmax: Array, x_shape: tuple[int, ...], kernel: Pair,
                           stride: Pair, pad: Pair) -> Array:
        self._pool_gradient("maxpool2d_backward", dout, argmax, x_shape, kernel, stride, pad)
        return self._maxpool2d_backward(dout, argmax, tuple(x_shape), kernel, stride, pad)

    def _maxpool2d_backward(self, dout: Array, argmax: Array, x_shape: tuple[int, ...], kernel: Pair,
                            stride: Pair, pad: Pair) -> Array:
        return ref.maxpool2d_backward(self.xp, dout, argmax, x_shape, kernel, stride, pad)

    def maxpool2d_relu(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Array, Array]:
        """Max-pooling of ReLU(x), computed as ReLU of the pooled maxima.

        Max commutes with ReLU (both are monotone), so the values are the same, and ReLU runs on a
        pooled-size array instead of a full-size one. Where a window holds no positive value, the
        argmax points at its largest negative entry rather than at one of ReLU's tied zeros: that
        winner's gradient is zero either way, so pair this only with ``maxpool2d_relu_backward``.
        """
        self._operands("maxpool2d_relu", x=x)
        _window("maxpool2d_relu", x.shape, kernel, stride, pad)
        return self._maxpool2d_relu(x, kernel, stride, pad)

    def _maxpool2d_relu(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Array, Array]:
        y, argmax = self._maxpool2d(x, kernel, stride, pad)
        return self._relu(y), argmax

    def maxpool2d_relu_backward(self, dout: Array, y: Array, argmax: Array, x_shape: tuple[int, ...], kernel: Pair,
                                stride: Pair, pad: Pair) -> Array:
        """The gradient through a ReLU and the max-pooling that follows it, in one step.

        ``y`` is the pooling's output. Only each window's winner gets a gradient, and the ReLU output
        there is the window's max, so the ReLU mask is just ``y > 0``, a pooled-size array. Masking
        dout before routing it skips ReLU's full-size backward pass and gives the same values, with
        one exception: a window whose max is NaN (its output is NaN) gets no gradient here, where
        ReLU's backward after the pooling's would pass it to the winner among the values before the
        NaN if that one is positive.
        """
        self._pool_gradient("maxpool2d_relu_backward", dout, argmax, x_shape, kernel, stride, pad, y)
        return self._maxpool2d_relu_backward(dout, y, argmax, tuple(x_shape), kernel, stride, pad)

    def _maxpool2d_relu_backward(self, dout: Array, y: Array, argmax: Array, x_shape: tuple[int, ...],
                                 kernel: Pair, stride: Pair, pad: Pair) -> Array:
        return self._maxpool2d_backward(dout * (y > 0), argmax, x_shape, kernel, stride, pad)

    # -- kernels: bias over the channel axis (axis 1) --------------------------------------------
    def _channel_bias(self, kernel: str, names: tuple[str, str], y: Array, b: Array) -> None:
        """The checks of a bias (or its gradient) ``b`` over the channel axis (axis 1) of ``y``."""
        self._operands(kernel, **{names[0]: y, names[1]: b})
        _ndim(kernel, names[0], y, 2, at_least=True)
        _shape(kernel, names[1], b, y.shape[1:2])

    def add_bias(self, y: Array, b: Array) -> None:
        """In place: y[:, c] += b[c]."""
        self._channel_bias("add_bias", ("y", "b"), y, b)
        self._add_bias(y, b)

    def _add_bias(self, y: Array, b: Array) -> None:
        ref.add_bias(self.xp, y, b)

    def bias_grad(self, dout: Array, out: Array) -> None:
        """out[c] = dout[:, c].sum(), written into ``out``."""
        self._channel_bias("bias_grad", ("dout", "out"), dout, out)
        self._bias_grad(dout, out)

    def _bias_grad(self, dout: Array, out: Array) -> None:
        ref.bias_grad(self.xp, dout, out)

    def add_bias_relu(self, y: Array, b: Array) -> None:
        """In place: y = relu(y + b) over the channel axis; a layer with ``activation="relu"`` saves a
        pass over its output (and, on a GPU, a launch)."""
        self._channel_bias("add_bias_relu", ("y", "b"), y, b)
        self._add_bias_relu(y, b)

    def _add_bias_relu(self, y: Array, b: Array) -> None:
        self._add_bias(y, b)
        self.xp.maximum(y, 0, out=y)

    def relu_bias_grad(self, dout: Array, y: Array, out: Array) -> Array:
        """The gradient through :meth:`add_bias_relu` given its output ``y``: returns dz (dout masked by
        y > 0) and writes the bias gradient, dz summed per channel, into ``out``."""
        self._elementwise("relu_bias_grad", dout, y)
        self._channel_bias("relu_bias_grad", ("dout", "out"), dout, out)
        return self._relu_bias_grad(dout, y, out)

    def _relu_bias_grad(self, dout: Array, y: Array, out: Array) -> Array:
        dz = self._relu_backward(dout, y)
        self._bias_grad(dz, out)
        return dz

    # -- kernels: activations (y = f(x); the gradients take dout and y of one shape) ---------------
    def _elementwise(self, kernel: str, dout: Array, y: Array) -> None:
        self._operands(kernel, dout=dout, y=y)
        if dout.shape != y.shape:
            raise ValueError(f"{kernel}: dout and y must have one shape, got {tuple(dout.shape)} and "
                             f"{tuple(y.shape)}")

    def relu(self, x: Array) -> Array:
        self._operands("relu", x=x)
        return self._relu(x)

    def _relu(self, x: Array) -> Array:
        return ref.relu(self.xp, x)

    def relu_backward(self, dout: Array, y: Array) -> Array:
        self._elementwise("relu_backward", dout, y)
        return self._relu_backward(dout, y)

    def _relu_backward(self, dout: Array, y: Array) -> Array:
        return ref.relu_backward(self.xp, dout, y)

    def sigmoid(self, x: Array) -> Array:
        self._operands("sigmoid", x=x)
        return self._sigmoid(x)

    def _sigmoid(self, x: Array) -> Array:
        return ref.sigmoid(self.xp, x)

    def sigmoid_backward(self, dout: Array, y: Array) -> Array:
        self._elementwise("sigmoid_backward", dout, y)
        return self._sigmoid_backward(dout, y)

    def _sigmoid_backward(self, dout: Array, y: Array) -> Array:
        return ref.sigmoid_backward(self.xp, dout, y)

    def tanh(self, x: Array) -> Array:
        self._operands("tanh", x=x)
        return self._tanh(x)

    def _tanh(self, x: Array) -> Array:
        return ref.tanh(self.xp, x)

    def tanh_backward(self, dout: Array, y: Array) -> Array:
        self._elementwise("tanh_backward", dout, y)
        return self._tanh_backward(dout, y)

    def _tanh_backward(self, dout: Array, y: Array) -> Array:
        return ref.tanh_backward(self.xp, dout, y)

    def softmax(self, x: Array) -> Array:
        self._operands("softmax", x=x)
        return self._softmax(x)

    def _softmax(self, x: Array) -> Array:
        return ref.softmax(self.xp, x)

    def softmax_backward(self, dout: Array, y: Array) -> Array:
        self._elementwise("softmax_backward", dout, y)
        return self._softmax_backward(dout, y)

    def _softmax_backward(self, dout: Array, y: Array) -> Array:
        return ref.softmax_backward(self.xp, dout, y)

    def softmax_cross_entropy(self, logits: Array, target: Array, hits: Array | None = None) -> tuple[Array, Array]:
        """(mean loss, dlogits) of (N, K) logits against integer labels (N,) or (N, K) rows of
        probabilities (the target's rank decides; integer rows count as probabilities). An empty batch
        has no mean and is refused; a label out of range gives NaN (``reference.softmax_cross_entropy``).
        With ``hits`` (an (N,) array of the logits' dtype), each row's correct prediction (1 or 0,
        ``reference.prediction_hits``) is written there too: on a GPU, in the same kernel."""
        kernel = "softmax_cross_entropy"
        self._operands(kernel, logits=logits, hits=hits)
        _ndim(kernel, "logits", logits, 2)
        if logits.shape[0] == 0 or logits.shape[1] == 0:
            raise ValueError(f"{kernel}: logits of shape {tuple(logits.shape)} hold no sample or no class, and "
                             "an empty batch has no mean loss")
        if self.is_array(target) and (target.ndim == 1 or target.dtype.kind in "iu"):
            self._integers(kernel, "target", target)
        else:  # probabilities, in the logits' dtype
            self.check_array(target, f"{kernel}'s target", logits.dtype)
        _shape(kernel, "target", target, logits.shape[:1] if target.ndim == 1 else logits.shape)
        if hits is not None:
            _shape(kernel, "hits", hits, logits.shape[:1])
        return self._softmax_cross_entropy(logits, target, hits)

    def _softmax_cross_entropy(self, logits: Array, target: Array, hits: Array | None = None) -> tuple[Array, Array]:
        if hits is not None:
            ref.prediction_hits(self.xp, logits, target, hits)
        return ref.softmax_cross_entropy(self.xp, logits, target)

    # -- kernels: optimizer updates (in place; the gradient may broadcast against the parameter) ---
    # The step scalars (lr, Adam's lr_t and eps_t) are Python floats or 0-d arrays of the parameter's
    # dtype on this backend: optimizers keep them on the device (see kernels/arrays.py's ``Scalar``).
    def _update(self, kernel: str, p: Array, g: Array, scalars: dict[str, Scalar], **state: Array | None) -> None:
        self._operands(kernel, p=p, g=g, **state)
        for name, a in state.items():
            if a is not None:
                _shape(kernel, name, a, p.shape)
        if g.shape != p.shape and (g.ndim > p.ndim or any(d not in (1, s) for d, s in
                                                          zip(g.shape[::-1], p.shape[::-1], strict=False))):
            raise ValueError(f"{kernel}: the gradient's shape {tuple(g.shape)} does not broadcast to the "
                             f"parameter's {tuple(p.shape)}")
        for name, v in scalars.items():
            if self.is_array(v):
                if v.shape != () or v.dtype != p.dtype:
                    raise ValueError(f"{kernel}: {name} must be a number or a 0-d {p.dtype} array, got "
                                     f"{v.dtype} {tuple(v.shape)}")
            elif isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise TypeError(f"{kernel}: {name} must be a number or a 0-d {p.dtype} array on backend "
                                f"{self.name!r}, got {type(v).__name__}")

    def sgd_update(self, p: Array, g: Array, velocity: Array | None, lr: Scalar, momentum: float,
                   nesterov: bool) -> None:
        self._update("sgd_update", p, g, {"lr": lr}, velocity=velocity)
        self._sgd_update(p, g, velocity, lr, momentum, nesterov)

    def _sgd_update(self, p: Array, g: Array, velocity: Array | None, lr: Scalar, momentum: float,
                    nesterov: bool) -> None:
        ref.sgd_update(self.xp, p, g, velocity, lr, momentum, nesterov)

    def adagrad_update(self, p: Array, g: Array, sum_sq: Array, lr: Scalar, eps: float) -> None:
        self._update("adagrad_update", p, g, {"lr": lr}, sum_sq=sum_sq)
        self._adagrad_update(p, g, sum_sq, lr, eps)

    def _adagrad_update(self, p: Array, g: Array, sum_sq: Array, lr: Scalar, eps: float) -> None:
        ref.adagrad_update(self.xp, p, g, sum_sq, lr, eps)

    def rmsprop_update(self, p: Array, g: Array, mean_sq: Array, lr: Scalar, rho: float, eps: float) -> None:
        self._update("rmsprop_update", p, g, {"lr": lr}, mean_sq=mean_sq)
        self._rmsprop_update(p, g, mean_sq, lr, rho, eps)

    def _rmsprop_update(self, p: Array, g: Array, mean_sq: Array, lr: Scalar, rho: float, eps: float) -> None:
        ref.rmsprop_update(self.xp, p, g, mean_sq, lr, rho, eps)

    def adam_update(self, p: Array, g: Array, m: Array, v: Array, lr_t: Scalar, beta1: float, beta2: float,
                    eps_t: Scalar) -> None:
        """Adam with its bias corrections folded into ``lr_t`` and ``eps_t`` (``reference.adam_scalars``)."""
        self._update("adam_update", p, g, {"lr_t": lr_t, "eps_t": eps_t}, m=m, v=v)
        self._adam_update(p, g, m, v, lr_t, beta1, beta2, eps_t)

    def _adam_update(self, p: Array, g: Array, m: Array, v: Array, lr_t: Scalar, beta1: float, beta2: float,
                     eps_t: Scalar) -> None:
        ref.adam_update(self.xp, p, g, m, v, lr_t, beta1, beta2, eps_t)
