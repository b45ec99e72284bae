"""The Numba backend: NumPy arrays, with the hot kernels replaced by parallel JIT loops.

Matrix products stay on BLAS (NumPy's matmul). Numba's threads and BLAS's threads take turns, never
run at once; what matters on a small machine is that idle Numba threads sleep instead of spinning
while BLAS works, so the workqueue threading layer is the default here (set NUMBA_THREADING_LAYER to
choose another). NUMBA_NUM_THREADS sets Numba's thread count, OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS the BLAS one; ``backprop info`` shows both. Kernels compile on first use, not at
import, and are cached on disk for the next process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from backprop.backends.base import Backend, Pair
from backprop.kernels.reference import conv_output_size

INSTALL_HINT = "pip install 'backprop[numba]'"


def _flat(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


class NumbaBackend(Backend):
    name = "numba"
    xp = np

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        numba = importlib.import_module("numba")
        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "workqueue"
        self.k = importlib.import_module("backprop.kernels.numba_cpu")
        super().__init__(*args, **kwargs)

    # -- convolution lowering and pooling -------------------------------------------------------
    def im2col(self, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> Any:
        n, c, h, w = x.shape
        oh = conv_output_size(h, kernel[0], stride[0], pad[0])
        ow = conv_output_size(w, kernel[1], stride[1], pad[1])
        col_t = np.empty((c * kernel[0] * kernel[1], n * oh * ow), dtype=x.dtype)
        self.k.im2col_t(np.ascontiguousarray(x), *kernel, *stride, *pad, col_t)
        return col_t.T  # the (N*OH*OW, C*KH*KW) matrix, column-major like the reference's

    def col2im(self, col: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Any:
        img = np.empty(x_shape, dtype=col.dtype)
        self.k.col2im_t(np.ascontiguousarray(col.T), *kernel, *stride, *pad, img)
        return img

    def maxpool2d(self, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Any, Any]:
        n, c, h, w = x.shape
        shape = (n, c, conv_output_size(h, kernel[0], stride[0], pad[0]),
                 conv_output_size(w, kernel[1], stride[1], pad[1]))
        out = np.empty(shape, dtype=x.dtype)
        argmax = np.empty(shape, dtype=np.int32)
        self.k.maxpool2d(np.ascontiguousarray(x), *kernel, *stride, *pad, out, argmax)
        return out, argmax

    def maxpool2d_backward(self, dout: Any, argmax: Any, x_shape: tuple[int, ...], kernel: Pair,
                           stride: Pair, pad: Pair) -> Any:
        dx = np.empty(x_shape, dtype=dout.dtype)
        self.k.maxpool2d_backward(np.ascontiguousarray(dout), argmax, kernel[1], *stride, *pad, dx)
        return dx

    # -- activations ------------------------------------------------------------------------------
    def _map(self, kernel: Callable[..., None], *arrays: Any) -> Any:
        """Run an elementwise kernel over flat contiguous copies (or views) of same-shaped arrays."""
        out = np.empty(arrays[0].shape, dtype=arrays[0].dtype)
        kernel(*(_flat(a) for a in arrays), out.reshape(-1))
        return out

    def relu(self, x: Any) -> Any:
        return self._map(self.k.relu, x)

    def relu_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.relu_backward, dout, y)

    def sigmoid(self, x: Any) -> Any:
        return self._map(self.k.sigmoid, x)

    def sigmoid_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.sigmoid_backward, dout, y)

    def tanh(self, x: Any) -> Any:
        return self._map(self.k.tanh, x)

    def tanh_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.tanh_backward, dout, y)

    def _rows(self, kernel: Callable[..., None], *arrays: Any) -> Any:
        """Run a row kernel over (rows, last axis) views of same-shaped arrays."""
        shape = arrays[0].shape
        out = np.empty(shape, dtype=arrays[0].dtype)
        kernel(*(np.ascontiguousarray(a).reshape(-1, shape[-1]) for a in arrays),
               out.reshape(-1, shape[-1]))
        return out

    def softmax(self, x: Any) -> Any:
        return self._rows(self.k.softmax, x)

    def softmax_backward(self, dout: Any, y: Any) -> Any:
        return self._rows(self.k.softmax_backward, dout, y)

    def softmax_cross_entropy(self, logits: Any, target: Any) -> tuple[Any, Any]:
        logits = np.ascontiguousarray(logits)
        grad = np.empty_like(logits)
        row_loss = np.empty(logits.shape[0], dtype=logits.dtype)
        if target.ndim == 1:
            self.k.softmax_cross_entropy_labels(logits, target.astype(np.int64, copy=False), grad, row_loss)
        else:
            self.k.softmax_cross_entropy_probs(logits, np.ascontiguousarray(target, dtype=logits.dtype),
                                               grad, row_loss)
        return row_loss.sum() / logits.shape[0], grad

    # -- optimizer updates (in place; the reference handles anything not contiguous) --------------
    @staticmethod
    def _inplace_ok(*arrays: Any) -> bool:
        return all(a.flags.c_contiguous and a.dtype == arrays[0].dtype for a in arrays)

    def sgd_update(self, p: Any, g: Any, velocity: Any | None, lr: float, momentum: float,
                   nesterov: bool) -> None:
        arrays = (p, g) if velocity is None else (p, g, velocity)
        if not self._inplace_ok(*arrays):
            return super().sgd_update(p, g, velocity, lr, momentum, nesterov)
        t = p.dtype.type
        if velocity is None:
            self.k.sgd(p.reshape(-1), g.reshape(-1), t(lr))
        else:
            self.k.sgd_momentum(p.reshape(-1), g.reshape(-1), velocity.reshape(-1), t(lr), t(momentum),
                                nesterov)

    def adagrad_update(self, p: Any, g: Any, sum_sq: Any, lr: float, eps: float) -> None:
        if not self._inplace_ok(p, g, sum_sq):
            return super().adagrad_update(p, g, sum_sq, lr, eps)
        t = p.dtype.type
        self.k.adagrad(p.reshape(-1), g.reshape(-1), sum_sq.reshape(-1), t(lr), t(eps))

    def rmsprop_update(self, p: Any, g: Any, mean_sq: Any, lr: float, rho: float, eps: float) -> None:
        if not self._inplace_ok(p, g, mean_sq):
            return super().rmsprop_update(p, g, mean_sq, lr, rho, eps)
        t = p.dtype.type
        self.k.rmsprop(p.reshape(-1), g.reshape(-1), mean_sq.reshape(-1), t(lr), t(rho), t(eps))

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr: float, beta1: float, beta2: float,
                    eps: float, step: int) -> None:
        if not self._inplace_ok(p, g, m, v):
            return super().adam_update(p, g, m, v, lr, beta1, beta2, eps, step)
        t = p.dtype.type
        lr_t = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step)
        eps_t = eps * (1 - beta2 ** step) ** 0.5
        self.k.adam(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), t(lr_t), t(beta1),
                    t(beta2), t(eps_t))


def probe() -> str | None:
    """None when Numba imports, else the reason (not installed, or broken against this NumPy)."""
    if importlib.util.find_spec("numba") is None:
        return f"Numba is not installed: {INSTALL_HINT}"
    try:
        importlib.import_module("numba")
    except Exception as exc:  # e.g. a Numba release that does not support this NumPy
        return f"Numba is installed but does not import: {type(exc).__name__}: {exc}"
    return None
