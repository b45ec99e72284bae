"""Numba kernels for the CPU: direct loops, JIT-compiled on first call and cached on disk.

Each kernel computes exactly what its reference in ``kernels/reference.py`` computes (same values, same
tie and padding rules), but in one pass over memory, with the outer loop over independent work split
across threads by ``prange``: rows of the patch matrix for im2col, image planes for col2im and pooling
(each thread owns its plane, so the scatter-adds need no atomics), rows for softmax-cross-entropy,
elements for the activations and optimizer updates. BLAS is never called from inside a ``prange``.
Importing this module compiles nothing; ``cache=True`` keeps the machine code for the next process.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_JIT = {"cache": True, "nogil": True}


# -- convolution lowering -----------------------------------------------------------------------------

@njit(parallel=True, **_JIT)
def im2col_t(x, kh, kw, sh, sw, ph, pw, out):  # pragma: no cover - compiled
    """Fill ``out`` (C*KH*KW, N*OH*OW): row (c, ky, kx) holds that pixel of every patch, in (n, oy, ox)
    order. ``im2col`` is its transpose, which is the layout the convolution layer consumes."""
    n, c, h, w = x.shape
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    for r in prange(c * kh * kw):
        ci = r // (kh * kw)
        ky = (r // kw) % kh
        kx = r % kw
        for ni in range(n):
            base = ni * oh * ow
            for oy in range(oh):
                iy = oy * sh + ky - ph
                row = base + oy * ow
                if iy < 0 or iy >= h:
                    for ox in range(ow):
                        out[r, row + ox] = 0
                    continue
                for ox in range(ow):
                    ix = ox * sw + kx - pw
                    out[r, row + ox] = x[ni, ci, iy, ix] if 0 <= ix < w else 0


@njit(parallel=True, **_JIT)
def col2im_t(col_t, kh, kw, sh, sw, ph, pw, out):  # pragma: no cover - compiled
    """Adjoint of :func:`im2col_t`: ``out`` (N, C, H, W) = the sum of every patch entry at its pixel.
    One thread per (image, channel) plane, so no two threads add into the same element."""
    n, c, h, w = out.shape
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    for p in prange(n * c):
        ni = p // c
        ci = p % c
        plane = out[ni, ci]
        plane[:, :] = 0
        for ky in range(kh):
            for kx in range(kw):
                r = (ci * kh + ky) * kw + kx
                for oy in range(oh):
                    iy = oy * sh + ky - ph
                    if iy < 0 or iy >= h:
                        continue
                    row = ni * oh * ow + oy * ow
                    for ox in range(ow):
                        ix = ox * sw + kx - pw
                        if 0 <= ix < w:
                            plane[iy, ix] += col_t[r, row + ox]


# -- max pooling ----------------------------------------------------------------------------------------

@njit(parallel=True, **_JIT)
def maxpool2d(x, kh, kw, sh, sw, ph, pw, out, argmax):  # pragma: no cover - compiled
    """Window max with padding as -inf; argmax is the offset ky*KW+kx. Mirrors the reference's running
    maximum exactly: the first offset wins ties, and a NaN wins and freezes the argmax."""
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for p in prange(n * c):
        ni = p // c
        ci = p % c
        for oy in range(oh):
            for ox in range(ow):
                best = -np.inf
                arg = 0
                nan = False
                for k in range(kh * kw):
                    iy = oy * sh + k // kw - ph
                    ix = ox * sw + k % kw - pw
                    v = x[ni, ci, iy, ix] if 0 <= iy < h and 0 <= ix < w else -np.inf
                    if k == 0:
                        best = v
                        nan = v != v
                    elif not nan:
                        if v != v:
                            best = v
                            nan = True
                        elif v > best:
                            best = v
                            arg = k
                out[ni, ci, oy, ox] = best
                argmax[ni, ci, oy, ox] = arg


@njit(parallel=True, **_JIT)
def maxpool2d_backward(dout, argmax, kw, sh, sw, ph, pw, dx):  # pragma: no cover - compiled
    """Add each output gradient to the input its window's max came from; one thread per plane."""
    n, c, h, w = dx.shape
    oh, ow = dout.shape[2], dout.shape[3]
    for p in prange(n * c):
        ni = p // c
        ci = p % c
        plane = dx[ni, ci]
        plane[:, :] = 0
        for oy in range(oh):
            for ox in range(ow):
                k = argmax[ni, ci, oy, ox]
                iy = oy * sh + k // kw - ph
                ix = ox * sw + k % kw - pw
                if 0 <= iy < h and 0 <= ix < w:
                    plane[iy, ix] += dout[ni, ci, oy, ox]


# -- activations (flat, contiguous arrays) ----------------------------------------------------------

@njit(parallel=True, **_JIT)
def relu(x, y):  # pragma: no cover - compiled
    for i in prange(x.size):
        y[i] = x[i] if x[i] > 0 else 0


@njit(parallel=True, **_JIT)
def relu_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] if y[i] > 0 else 0


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
def tanh(x, y):  # pragma: no cover - compiled
    for i in prange(x.size):
        y[i] = math.tanh(x[i])


@njit(parallel=True, **_JIT)
def tanh_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] * (1 - y[i] * y[i])


# -- softmax and softmax-cross-entropy (rows of a contiguous (N, K) matrix) ---------------------------

@njit(parallel=True, **_JIT)
def softmax(x, y):  # pragma: no cover - compiled
    n, k = x.shape
    for i in prange(n):
        m = x[i, 0]
        for j in range(1, k):
            m = max(m, x[i, j])
        s = 0.0
        for j in range(k):
            y[i, j] = math.exp(x[i, j] - m)
            s += y[i, j]
        for j in range(k):
            y[i, j] /= s


@njit(parallel=True, **_JIT)
def softmax_backward(dout, y, dx):  # pragma: no cover - compiled
    n, k = y.shape
    for i in prange(n):
        dot = 0.0
        for j in range(k):
            dot += dout[i, j] * y[i, j]
        for j in range(k):
            dx[i, j] = y[i, j] * (dout[i, j] - dot)


@njit(parallel=True, **_JIT)
def softmax_cross_entropy_labels(logits, labels, grad, row_loss):  # pragma: no cover - compiled
    """Per row: loss log(sum exp(z - max)) - (z[label] - max) and gradient (softmax - onehot) / N."""
    n, k = logits.shape
    inv_n = 1.0 / n
    for i in prange(n):
        m = logits[i, 0]
        for j in range(1, k):
            m = max(m, logits[i, j])
        s = 0.0
        for j in range(k):
            grad[i, j] = math.exp(logits[i, j] - m)
            s += grad[i, j]
        t = labels[i]
        row_loss[i] = math.log(s) - (logits[i, t] - m)
        for j in range(k):
            grad[i, j] = grad[i, j] / s * inv_n
        grad[i, t] -= inv_n


@njit(parallel=True, **_JIT)
def softmax_cross_entropy_probs(logits, target, grad, row_loss):  # pragma: no cover - compiled
    """Per row: loss sum_j t_j (logsumexp - z_j) and gradient (softmax - t) / N."""
    n, k = logits.shape
    inv_n = 1.0 / n
    for i in prange(n):
        m = logits[i, 0]
        for j in range(1, k):
            m = max(m, logits[i, j])
        s = 0.0
        for j in range(k):
            grad[i, j] = math.exp(logits[i, j] - m)
            s += grad[i, j]
        log_z = math.log(s)
        acc = 0.0
        for j in range(k):
            acc += target[i, j] * (log_z - (logits[i, j] - m))
            grad[i, j] = (grad[i, j] / s - target[i, j]) * inv_n
        row_loss[i] = acc


# -- optimizer updates (flat, contiguous, in place) ---------------------------------------------------

@njit(parallel=True, **_JIT)
def sgd(p, g, lr):  # pragma: no cover - compiled
    for i in prange(p.size):
        p[i] -= lr * g[i]


@njit(parallel=True, **_JIT)
def sgd_momentum(p, g, v, lr, momentum, nesterov):  # pragma: no cover - compiled
    for i in prange(p.size):
        v[i] = momentum * v[i] + g[i]
        p[i] -= lr * (g[i] + momentum * v[i]) if nesterov else lr * v[i]


@njit(parallel=True, **_JIT)
def adagrad(p, g, s, lr, eps):  # pragma: no cover - compiled
    for i in prange(p.size):
        s[i] += g[i] * g[i]
        p[i] -= lr * g[i] / (math.sqrt(s[i]) + eps)


@njit(parallel=True, **_JIT)
def rmsprop(p, g, s, lr, rho, eps):  # pragma: no cover - compiled
    for i in prange(p.size):
        s[i] = rho * s[i] + (1 - rho) * g[i] * g[i]
        p[i] -= lr * g[i] / (math.sqrt(s[i]) + eps)


@njit(parallel=True, **_JIT)
def adam(p, g, m, v, lr_t, beta1, beta2, eps_t):  # pragma: no cover - compiled
    """One Adam step with the bias corrections folded into ``lr_t`` and ``eps_t`` by the caller."""
    for i in prange(p.size):
        m[i] = beta1 * m[i] + (1 - beta1) * g[i]
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
        p[i] -= lr_t * m[i] / (math.sqrt(v[i]) + eps_t)
