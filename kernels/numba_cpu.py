"""Numba kernels for the CPU: parallel loops, JIT-compiled on first call and cached on disk.

Only kernels that measured faster than the NumPy reference on this project's 2-core machine live here
(the elementwise activation kernels, whose single fused pass beats NumPy's temporaries); for the rest
(im2col, col2im, max-pooling, softmax-cross-entropy, tanh, optimizer updates) direct Numba loops
measured 1.5-50x slower than the vectorized reference, largely because waking Numba's worker threads
between kernels costs milliseconds there, so the Numba backend inherits the reference for them. Each
kernel computes exactly what its reference in ``kernels/reference.py`` computes. Importing this module
compiles nothing; ``cache=True`` keeps the machine code for the next process.
"""

from __future__ import annotations

import math

from numba import njit, prange

_JIT = {"cache": True, "nogil": True}


# -- activations (flat, contiguous arrays) ----------------------------------------------------------

@njit(parallel=True, **_JIT)
def relu(x, y):  # pragma: no cover - compiled
    for i in prange(x.size):
        y[i] = 0 if x[i] <= 0 else x[i]  # NaN passes through, as in the reference


@njit(parallel=True, **_JIT)
def relu_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] * (1 if y[i] > 0 else 0)  # NaN * 0 stays NaN, as in the reference


@njit(parallel=True, **_JIT)
def sigmoid(x, y):  # pragma: no cover - compiled
    for i in prange(x.size):
        e = math.exp(-abs(x[i]))
        y[i] = 1 / (1 + e) if x[i] >= 0 else e / (1 + e)


@njit(parallel=True, **_JIT)
def sigmoid_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] * y[i] * (1 - y[i])


@njit(parallel=True, **_JIT)
def tanh_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] * (1 - y[i] * y[i])
