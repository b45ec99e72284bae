"""The Backend interface: array creation, randomness and every hot kernel, written against ``self.xp``.

A backend is an array module plus a default float dtype. This base class is complete on its own: with
``xp = numpy`` it is the NumPy reference backend, and faster backends subclass it and override only the
kernels they speed up (the Thinc pattern), so every override has a reference to be tested against.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from backprop.kernels import reference as ref
from backprop.kernels.arrays import Array

Pair = tuple[int, int]
DTypeLike = Any

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ConvCache(NamedTuple):
    """What ``conv2d_forward`` keeps for ``conv2d_backward``: the patch matrix and the input's geometry."""

    col: Array  # im2col(x): (N*OH*OW, C*KH*KW)
    x_shape: tuple[int, ...]
    stride: Pair
    pad: Pair


def _whole_batch(pixels: int, patch_columns: int) -> bool:
    """Whether a convolution's products should run over the whole batch at once rather than per image.

    With fewer output pixels per image than patch columns (OH*OW < C*KH*KW), per-image products are
    small and many, and the transposed copies that whole-batch products need are small: whole-batch
    products win, forward and backward (measured in bench/results/). Otherwise per-image products avoid
    those copies, and their operands and results are views in NCHW order."""
    return pixels < patch_columns


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
        self.seed(seed)

    def __deepcopy__(self, memo: dict) -> Backend:
        return self  # one instance per (name, dtype): copies of a model share it

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.dtype.name}>"

    # -- arrays ---------------------------------------------------------------------------------
    def is_array(self, a: Array) -> bool:
        """True when ``a`` is an array that lives on this backend's device."""
        return isinstance(a, self.xp.ndarray)

    def asarray(self, a: Array, dtype: DTypeLike | None = None) -> Array:
        """Put ``a`` on this backend. Floating data get ``dtype`` (default: the backend's dtype)."""
        if hasattr(a, "__cuda_array_interface__") and self.xp is np:
            a = a.get()  # a CuPy array coming back to the host
        if dtype is None:
            kind = np.dtype(a.dtype).kind if hasattr(a, "dtype") else np.asarray(a).dtype.kind
            dtype = self.dtype if kind == "f" else None
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a: Array) -> np.ndarray:
        """A host NumPy copy (or view, on the CPU) of a backend array."""
        return np.asarray(a)

    def check_array(self, a: Array, what: str, dtype: DTypeLike | None = None) -> None:
        """Refuse an array of another backend, or of another dtype than ``dtype``, naming the fix."""
        if not self.is_array(a):
            kind = f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"
            raise TypeError(f"{what} is a {kind}, but this runs on the {self.name!r} backend: move it "
                            f"with backend.asarray(x) (or move the model with model.to(...))")
        if dtype is not None and a.dtype != dtype:
            convert = (f" or convert the model with model.to(dtype={a.dtype.name!r})"
                       if a.dtype in (np.float32, np.float64) else "")
            raise TypeError(f"{what} has dtype {a.dtype}, but the parameters are {np.dtype(dtype)}: cast "
                            f"it with x.astype({np.dtype(dtype).name!r}){convert}")

    def zeros(self, shape: Any, dtype: DTypeLike | None = None) -> Array:
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def empty(self, shape: Any, dtype: DTypeLike | None = None) -> Array:
        return self.xp.empty(shape, dtype=self.dtype if dtype is None else dtype)

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU. Call it before reading a clock."""

    def can_hold(self, nbytes: int) -> bool:
        """Whether a dataset of ``nbytes`` may stay on this backend for a whole run (on the CPU it is
        already in host memory, so always)."""
        return True

    # -- randomness -----------------------------------------------------------------------------
    def seed(self, seed: int | None) -> None:
        """Restart the generator: the same seed gives the same numbers on the same backend."""
        self.rng = self.xp.random.default_rng(seed)

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

    # -- kernels: matrix products and convolution lowering --------------------------------------
    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        return self.xp.matmul(a, b, out=out)

    def im2col(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> Array:
        return ref.im2col(self.xp, x, kernel, stride, pad)

    def col2im(self, col: Array, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Array:
        return ref.col2im(self.xp, col, x_shape, kernel, stride, pad)

    def conv2d_forward(self, x: Array, W: Array, b: Array, stride: Pair, pad: Pair) -> tuple[Array, ConvCache]:
        """Convolution of NCHW ``x`` with ``W`` (O, C, KH, KW) plus ``b`` (O,): im2col, one matrix
        product with W as an (O, C*KH*KW) matrix, and the bias. Returns the output and the cache
        ``conv2d_backward`` takes."""
        n, o = x.shape[0], W.shape[0]
        oh = ref.conv_output_size(x.shape[2], W.shape[2], stride[0], pad[0])
        ow = ref.conv_output_size(x.shape[3], W.shape[3], stride[1], pad[1])
        col = self.im2col(x, W.shape[2:], stride, pad)  # (N*OH*OW, CKK)
        w = W.reshape(o, -1)
        if _whole_batch(oh * ow, col.shape[1]):
            # (O, CKK) @ (CKK, N*OH*OW), then the bias added on the way into NCHW order.
            rows = self.matmul(w, col.T).reshape(o, n, oh * ow)
            out = self.empty((n, o, oh * ow), dtype=x.dtype)
            self.xp.add(rows.transpose(1, 0, 2), b[:, None], out=out)
        else:
            # One (O, CKK) @ (CKK, OH*OW) product per image (a batched matmul): the output comes out
            # NCHW and contiguous, and with im2col's column-major patch matrix the operands are views.
            out = self.matmul(w, col.reshape(n, oh * ow, -1).transpose(0, 2, 1))
            self.add_bias(out, b)
        return out.reshape(n, o, oh, ow), ConvCache(col, tuple(x.shape), stride, pad)

    def conv2d_backward(self, dout: Array, cache: ConvCache, W: Array, dW: Array, db: Array,
                        need_dx: bool = True) -> Array | None:
        """Write the gradients of ``W`` and ``b`` into ``dW`` and ``db`` (in place) and return the input's
        gradient, or None with ``need_dx=False`` (a first layer's, which nobody uses: a GEMM and a
        col2im saved)."""
        n, o = dout.shape[:2]
        dout = dout.reshape(n, o, -1)  # (N, O, OH*OW): a view of a contiguous gradient
        pixels = dout.shape[2]
        self.bias_grad(dout, db)
        rows = None
        if _whole_batch(pixels, cache.col.shape[1]):  # dout as one (O, N*OH*OW) matrix
            rows = self.xp.ascontiguousarray(dout.transpose(1, 0, 2)).reshape(o, -1)
            self.matmul(rows, cache.col, out=dW.reshape(o, -1))
        else:  # dW = sum over images of dout[n] @ col[n]
            self.matmul(dout, cache.col.reshape(n, pixels, -1)).sum(axis=0, out=dW.reshape(o, -1))
        if not need_dx:
            return None
        # dcol = W^T @ dout, in the (CKK, N*OH*OW) layout im2col uses, so that col2im reads it in order.
        wt = W.reshape(o, -1).T
        if rows is not None:
            dcol = self.matmul(wt, rows)
        else:  # one product per image, each written straight into its place in that layout
            dcol = self.empty((wt.shape[0], n, pixels), dtype=dout.dtype)
            self.matmul(wt, dout, out=dcol.transpose(1, 0, 2))
            dcol = dcol.reshape(wt.shape[0], -1)
        return self.col2im(dcol.T, cache.x_shape, W.shape[2:], cache.stride, cache.pad)

    def maxpool2d(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Array, Array]:
        return ref.maxpool2d(self.xp, x, kernel, stride, pad)

    def maxpool2d_backward(self, dout: Array, argmax: Array, x_shape: tuple[int, ...], kernel: Pair,
                           stride: Pair, pad: Pair) -> Array:
        return ref.maxpool2d_backward(self.xp, dout, argmax, x_shape, kernel, stride, pad)

    def maxpool2d_relu(self, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Array, Array]:
        """Max-pooling of ReLU(x), computed as ReLU of the pooled maxima.

        Max commutes with ReLU (both are monotone), so the values are the same, and ReLU runs on a
        pooled-size array instead of a full-size one. Where a window holds no positive value, the
        argmax points at its largest negative entry rather than at one of ReLU's tied zeros: that
        winner's gradient is zero either way, so pair this only with ``maxpool2d_relu_backward``.
        """
        y, argmax = self.maxpool2d(x, kernel, stride, pad)
        return self.relu(y), argmax

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
        return self.maxpool2d_backward(dout * (y > 0), argmax, x_shape, kernel, stride, pad)

    # -- kernels: bias over the channel axis (axis 1) --------------------------------------------
    def add_bias(self, y: Array, b: Array) -> None:
        """In place: y[:, c] += b[c]."""
        ref.add_bias(self.xp, y, b)

    def bias_grad(self, dout: Array, out: Array) -> None:
        """out[c] = dout[:, c].sum(), written into ``out``."""
        ref.bias_grad(self.xp, dout, out)

    # -- kernels: activations ---------------------------------------------------------------------
    def relu(self, x: Array) -> Array:
        return ref.relu(self.xp, x)

    def relu_backward(self, dout: Array, y: Array) -> Array:
        return ref.relu_backward(self.xp, dout, y)

    def sigmoid(self, x: Array) -> Array:
        return ref.sigmoid(self.xp, x)

    def sigmoid_backward(self, dout: Array, y: Array) -> Array:
        return ref.sigmoid_backward(self.xp, dout, y)

    def tanh(self, x: Array) -> Array:
        return ref.tanh(self.xp, x)

    def tanh_backward(self, dout: Array, y: Array) -> Array:
        return ref.tanh_backward(self.xp, dout, y)

    def softmax(self, x: Array) -> Array:
        return ref.softmax(self.xp, x)

    def softmax_backward(self, dout: Array, y: Array) -> Array:
        return ref.softmax_backward(self.xp, dout, y)

    def softmax_cross_entropy(self, logits: Array, target: Array) -> tuple[Array, Array]:
        return ref.softmax_cross_entropy(self.xp, logits, target)

    # -- kernels: optimizer updates (in place) ----------------------------------------------------
    def sgd_update(self, p: Array, g: Array, velocity: Array | None, lr: float, momentum: float,
                   nesterov: bool) -> None:
        ref.sgd_update(self.xp, p, g, velocity, lr, momentum, nesterov)

    def adagrad_update(self, p: Array, g: Array, sum_sq: Array, lr: float, eps: float) -> None:
        ref.adagrad_update(self.xp, p, g, sum_sq, lr, eps)

    def rmsprop_update(self, p: Array, g: Array, mean_sq: Array, lr: float, rho: float, eps: float) -> None:
        ref.rmsprop_update(self.xp, p, g, mean_sq, lr, rho, eps)

    def adam_update(self, p: Array, g: Array, m: Array, v: Array, lr: float, beta1: float, beta2: float,
                    eps: float, step: int) -> None:
        ref.adam_update(self.xp, p, g, m, v, lr, beta1, beta2, eps, step)
