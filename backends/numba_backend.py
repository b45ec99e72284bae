"""The Numba backend: NumPy arrays, with the hot kernels replaced by JIT-compiled loops.

Matrix products stay on BLAS (NumPy's matmul); everything around them (im2col, col2im, pooling,
bias, activations, softmax-cross-entropy, optimizer updates) is one Numba loop each, where NumPy
needs several passes and temporaries. The kernels are serial loops (``kernels/numba_cpu.py`` says
what was measured), so the cores belong to BLAS, whose threads OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS set; NUMBA_NUM_THREADS would size Numba's own pool, which these kernels never wake.
``backprop info`` shows both. Kernels compile on first use, not at import, and are cached on disk
for the next process. Anything a kernel does not cover (pooling windows other than 2x2 with stride
2, a non-contiguous optimizer state, tanh's forward pass, softmax) is the NumPy reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from backprop.backends.base import Backend, Pair
from backprop.backends.install import pip_install
from backprop.kernels import reference as ref
from backprop.kernels.arrays import Scalar
from backprop.kernels.reference import conv_output_size

INSTALL_HINT = pip_install("numba")


def _flat(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def _channels(a: np.ndarray) -> np.ndarray:
    """A C-contiguous (N, C, ...) array as (N, C, P), P the product of the rest (1 if none; N may be 0)."""
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _tiny(a: np.ndarray) -> np.floating:
    """The smallest normal number of ``a``'s dtype, below which optimizer state is stored as zero."""
    return np.finfo(a.dtype).tiny


def _is_2x2(kernel: Pair, stride: Pair, pad: Pair) -> bool:
    """The pooling window the Numba kernels cover (other windows use the reference)."""
    return kernel == (2, 2) and stride == (2, 2) and pad == (0, 0)


class NumbaBackend(Backend):
    name = "numba"
    xp = np

    def __init__(self, dtype: Any = np.float32, seed: int | None = None, kernels: ModuleType | None = None) -> None:
        """``kernels``: a module with the kernels of ``backprop.kernels.numba_cpu`` (the default), for
        comparing two versions of them (``bench/ab_kernels.py``), each on a backend of its own."""
        self.k = kernels if kernels is not None else importlib.import_module("backprop.kernels.numba_cpu")
        super().__init__(dtype, seed)

    # -- convolution lowering and pooling -------------------------------------------------------
    def _im2col(self, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> Any:
        n, c, h, w = x.shape
        oh = conv_output_size(h, kernel[0], stride[0], pad[0])
        ow = conv_output_size(w, kernel[1], stride[1], pad[1])
        col = np.empty((c, *kernel, n, oh, ow), dtype=x.dtype)
        self.k.im2col(np.ascontiguousarray(x), col, *stride, *pad)
        return col.reshape(c * kernel[0] * kernel[1], n * oh * ow).T  # column-major, as the reference's

    def _col2im(self, col: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Any:
        n, c, h, w = x_shape
        oh = conv_output_size(h, kernel[0], stride[0], pad[0])
        ow = conv_output_size(w, kernel[1], stride[1], pad[1])
        patches = np.ascontiguousarray(col.T).reshape(c, *kernel, n, oh, ow)  # no copy from im2col's layout
        img = np.empty(x_shape, dtype=col.dtype)
        self.k.col2im(patches, img, *stride, *pad)
        return img

    def _maxpool2d(self, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Any, Any]:
        if not _is_2x2(kernel, stride, pad):
            return super()._maxpool2d(x, kernel, stride, pad)
        n, c, h, w = x.shape
        out = np.empty((n, c, h // 2, w // 2), dtype=x.dtype)
        argmax = np.empty(out.shape, dtype=np.int8)
        self.k.maxpool2d_2x2(np.ascontiguousarray(x), out, argmax)
        return out, argmax

    def _maxpool2d_backward(self, dout: Any, argmax: Any, x_shape: tuple[int, ...], kernel: Pair,
                           stride: Pair, pad: Pair) -> Any:
        return self._maxpool2d_backward_2x2(dout, None, argmax, x_shape, kernel, stride, pad)

    def _maxpool2d_relu_backward(self, dout: Any, y: Any, argmax: Any, x_shape: tuple[int, ...], kernel: Pair,
                                stride: Pair, pad: Pair) -> Any:
        return self._maxpool2d_backward_2x2(dout, y, argmax, x_shape, kernel, stride, pad)

    def _maxpool2d_backward_2x2(self, dout: Any, y: Any | None, argmax: Any, x_shape: tuple[int, ...],
                                kernel: Pair, stride: Pair, pad: Pair) -> Any:
        """Both pooling gradients (``y`` given: through the ReLU before it) by one kernel, or, for
        anything but a 2x2 window, by the reference (the public methods checked the shapes)."""
        if not _is_2x2(kernel, stride, pad):
            if y is None:
                return super()._maxpool2d_backward(dout, argmax, x_shape, kernel, stride, pad)
            return super()._maxpool2d_relu_backward(dout, y, argmax, x_shape, kernel, stride, pad)
        dx = np.empty(x_shape, dtype=dout.dtype)
        self.k.maxpool2d_backward_2x2(np.ascontiguousarray(dout), np.ascontiguousarray(argmax),
                                      None if y is None else np.ascontiguousarray(y), dx)
        return dx

    # -- bias -----------------------------------------------------------------------------------------
    def _add_bias(self, y: Any, b: Any) -> None:
        if not y.flags.c_contiguous:
            return super()._add_bias(y, b)
        self.k.add_bias(_channels(y), np.ascontiguousarray(b))

    def _bias_grad(self, dout: Any, out: Any) -> None:
        if not out.flags.c_contiguous:
            return super()._bias_grad(dout, out)
        self.k.bias_grad(_channels(np.ascontiguousarray(dout)), out)

    def _add_bias_relu(self, y: Any, b: Any) -> None:
        if not y.flags.c_contiguous:
            return super()._add_bias_relu(y, b)
        self.k.add_bias_relu(_channels(y), np.ascontiguousarray(b))

    def _relu_bias_grad(self, dout: Any, y: Any, out: Any) -> Any:
        if not out.flags.c_contiguous:
            return super()._relu_bias_grad(dout, y, out)
        dz = np.empty(dout.shape, dtype=dout.dtype)
        self.k.relu_bias_grad(_channels(np.ascontiguousarray(dout)), _channels(np.ascontiguousarray(y)), _channels(dz),
                              out)
        return dz

    # -- activations ------------------------------------------------------------------------------
    def _map(self, kernel: Callable[..., None], *arrays: Any) -> Any:
        """Run an elementwise kernel over flat contiguous copies (or views) of same-shaped arrays (the
        public methods checked the shapes: Numba would read past the end of a shorter one)."""
        out = np.empty(arrays[0].shape, dtype=arrays[0].dtype)
        kernel(*(_flat(a) for a in arrays), out.reshape(-1))
        return out

    def _relu(self, x: Any) -> Any:
        return self._map(self.k.relu, x)

    def _relu_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.relu_backward, dout, y)

    def _sigmoid(self, x: Any) -> Any:
        return self._map(self.k.sigmoid, x)

    def _sigmoid_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.sigmoid_backward, dout, y)

    def _tanh_backward(self, dout: Any, y: Any) -> Any:
        return self._map(self.k.tanh_backward, dout, y)

    def _softmax_cross_entropy(self, logits: Any, target: Any, hits: Any | None = None) -> tuple[Any, Any]:
        if hits is not None:  # (an argmax over (N, K): small beside the loss's pass)
            ref.prediction_hits(np, logits, target, hits)
        logits = np.ascontiguousarray(logits)
        grad = np.empty_like(logits)
        if target.ndim == 1:
            loss = self.k.softmax_cross_entropy_labels(logits, target, grad)
        else:
            loss = self.k.softmax_cross_entropy_probs(logits, np.ascontiguousarray(target), grad)
        return np.asarray(loss, dtype=logits.dtype), grad

    # -- optimizer updates (in place; the reference handles anything not contiguous) --------------
    @staticmethod
    def _inplace_ok(*arrays: Any) -> bool:
        """Same shape, dtype and C order: anything else (broadcasting included) goes to the reference."""
        first = arrays[0]
        return all(a.flags.c_contiguous and a.dtype == first.dtype and a.shape == first.shape for a in arrays)

    def _sgd_update(self, p: Any, g: Any, velocity: Any | None, lr: Scalar, momentum: float,
                   nesterov: bool) -> None:
        arrays = (p, g) if velocity is None else (p, g, velocity)
        if not self._inplace_ok(*arrays):
            return super()._sgd_update(p, g, velocity, lr, momentum, nesterov)
        t = p.dtype.type
        if velocity is None:
            self.k.sgd_update(p.reshape(-1), g.reshape(-1), t(lr))
        else:
            self.k.sgd_update_momentum(p.reshape(-1), g.reshape(-1), velocity.reshape(-1), t(lr), t(momentum),
                                       nesterov, _tiny(p))

    def _adagrad_update(self, p: Any, g: Any, sum_sq: Any, lr: Scalar, eps: float) -> None:
        if not self._inplace_ok(p, g, sum_sq):
            return super()._adagrad_update(p, g, sum_sq, lr, eps)
        t = p.dtype.type
        self.k.adagrad_update(p.reshape(-1), g.reshape(-1), sum_sq.reshape(-1), t(lr), t(eps))

    def _rmsprop_update(self, p: Any, g: Any, mean_sq: Any, lr: Scalar, rho: float, eps: float) -> None:
        if not self._inplace_ok(p, g, mean_sq):
            return super()._rmsprop_update(p, g, mean_sq, lr, rho, eps)
        t = p.dtype.type
        self.k.rmsprop_update(p.reshape(-1), g.reshape(-1), mean_sq.reshape(-1), t(lr), t(rho), t(1 - rho),
                              t(eps), _tiny(p))

    def _adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: Scalar, beta1: float, beta2: float,
                     eps_t: Scalar) -> None:
        if not self._inplace_ok(p, g, m, v):
            return super()._adam_update(p, g, m, v, lr_t, beta1, beta2, eps_t)
        t = p.dtype.type
        self.k.adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), t(lr_t), t(beta1),
                           t(1 - beta1), t(beta2), t(1 - beta2), t(eps_t), _tiny(p))


def probe() -> str | None:
    """None when Numba imports, else the reason (not installed, or broken against this NumPy)."""
    if importlib.util.find_spec("numba") is None:
        return f"Numba is not installed: {INSTALL_HINT}"
    try:
        importlib.import_module("numba")
    except Exception as exc:  # e.g. a Numba release that does not support this NumPy
        return f"Numba is installed but does not import: {type(exc).__name__}: {exc}"
    return None
