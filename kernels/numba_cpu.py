"""Numba kernels for the CPU: direct loops, JIT-compiled on first call and cached on disk.

Each kernel computes what its reference in ``kernels/reference.py`` computes (same tie, NaN and padding
rules; the same values up to rounding where a sum runs in another order or float32 sigmoid uses its
own exp), in one pass over memory where NumPy needs several passes and temporaries.
Loops are ordered so that the large array is streamed front to back while the small one being
gathered from or added into stays in cache, and the innermost loop runs over a contiguous row,
which LLVM vectorizes.

Measured on this project's 2-core machine (``bench/results/``), which shaped the code:
- Serial loops. The loops over images and elements are written with ``prange``, which runs serially
  since the kernels are compiled without ``parallel=True``: compiled in parallel (as
  ``bench/numba_threading.py`` does, on these same functions) they were no faster end to end, since
  waking Numba's worker threads between kernels, while BLAS's threads own the cores, cost about what
  the second core gained.
- Indices that may be negative as far as the compiler knows (``ox * stride + kx - pad``) go through
  :func:`_u` once they are known to be in bounds, or Numba's negative-index wraparound check stops
  vectorization (4-8x slower).
- Max pooling has a kernel for the 2x2, stride 2, unpadded window only: with the window size known at
  compile time the comparisons become branch-free selects; a loop over a run-time window measured
  2-3x slower than NumPy, so other windows use the reference.

Kernels carry the name of the Backend method they serve, with a suffix for a variant that needs an
entry point of its own (``maxpool2d_2x2``, ``softmax_cross_entropy_labels`` and ``_probs``,
``sgd_update_momentum``), as the CUDA kernels do, and order their parameters as those do: arrays first
(inputs, then outputs; an update's as the reference orders them), then scalars.

float32 arithmetic stays float32: scalars are passed in the arrays' dtype by the backend, and constants
are written in it (``dx.dtype.type(1)``), since a bare ``1`` would make Numba compute in float64. BLAS is
never called inside a kernel. Importing this module compiles nothing; ``cache=True`` keeps the
machine code for the next process.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

_JIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}


def _kernel(**options):
    """Compile with the project's options (plus ``options``) on first call."""
    return njit(**_JIT, **options)


@njit(inline="always", **_JIT)
def _u(i: int) -> int:
    """An index known to be in bounds, as unsigned: Numba then skips its negative-index wraparound
    check, which otherwise stops LLVM from vectorizing the loop (measured 4-8x slower)."""
    return np.uint64(i)


@njit(inline="always", **_JIT)
def _valid_range(k: int, stride: int, pad: int, size: int, out: int) -> tuple[int, int]:
    """The outputs o in [lo, hi) whose input index o * stride + k - pad lies inside [0, size)."""
    lo = 0 if k >= pad else (pad - k + stride - 1) // stride
    hi = min(out, (size - 1 - k + pad) // stride + 1) if size - 1 - k + pad >= 0 else 0
    return min(lo, out), max(hi, min(lo, out))


# -- convolution lowering -----------------------------------------------------------------------------

@_kernel()
def im2col(x, col, sh, sw, ph, pw):  # pragma: no cover - compiled
    """Fill ``col`` (C, KH, KW, N, OH, OW) with every patch pixel, zero where it falls in the padding:
    the memory layout of the reference's patch matrix, written front to back in one stream (the
    images, re-read once per window offset, stay in cache)."""
    n, c, h, w = x.shape
    kh, kw, oh, ow = col.shape[1], col.shape[2], col.shape[4], col.shape[5]
    if col.shape[0] != c or col.shape[3] != n or min(sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError("im2col: col must be (C, KH, KW, N, OH, OW) of x's N and C, strides >= 1, pads >= 0")
    for ci in range(c):
        for ky in range(kh):
            for kx in range(kw):
                lo, hi = _valid_range(kx, sw, pw, w, ow)
                for ni in prange(n):
                    for oy in range(oh):
                        iy = oy * sh + ky - ph
                        if iy < 0 or iy >= h:
                            for ox in range(ow):
                                col[ci, ky, kx, ni, oy, ox] = 0
                            continue
                        for ox in range(lo):
                            col[ci, ky, kx, ni, oy, _u(ox)] = 0
                        for ox in range(lo, hi):
                            col[ci, ky, kx, ni, oy, _u(ox)] = x[ni, ci, _u(iy), _u(ox * sw + kx - pw)]
                        for ox in range(hi, ow):
                            col[ci, ky, kx, ni, oy, _u(ox)] = 0


@_kernel()
def col2im(col, img, sh, sw, ph, pw):  # pragma: no cover - compiled
    """Adjoint of :func:`im2col`: ``img`` (N, C, H, W) = the sum of every patch pixel at the pixel it
    came from (padding dropped). ``col`` is read front to back in one stream; the image, added into
    once per window offset, stays in cache."""
    n, c, h, w = img.shape
    kh, kw, oh, ow = col.shape[1], col.shape[2], col.shape[4], col.shape[5]
    if col.shape[0] != c or col.shape[3] != n or min(sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError("col2im: col must be (C, KH, KW, N, OH, OW) of img's N and C, strides >= 1, pads >= 0")
    img[...] = 0
    for ci in range(c):
        for ky in range(kh):
            for kx in range(kw):
                lo, hi = _valid_range(kx, sw, pw, w, ow)
                for ni in prange(n):
                    for oy in range(oh):
                        iy = oy * sh + ky - ph
                        if 0 <= iy < h:
                            for ox in range(lo, hi):
                                img[ni, ci, _u(iy), _u(ox * sw + kx - pw)] += col[ci, ky, kx, ni, oy, _u(ox)]


# -- max pooling: 2x2 windows, stride 2, no padding -------------------------------------------------

@njit(inline="always", **_JIT)
def _pooled_fits(pooled, argmax, full):
    """Whether ``pooled`` and ``argmax`` are one (N, C, OH, OW) shape whose 2x2 windows lie inside
    ``full`` (N, C, H, W): the loops index by the pooled shape and do not check bounds."""
    return (pooled.shape == argmax.shape and pooled.shape[0] == full.shape[0] and pooled.shape[1] == full.shape[1]
            and 2 * pooled.shape[2] <= full.shape[2] and 2 * pooled.shape[3] <= full.shape[3])


@_kernel()
def _window_with_nan(x, ni, ci, y0, x0):  # pragma: no cover - compiled
    """The reference's rule for a 2x2 window that holds a NaN: the max is the NaN, and the argmax is
    that of the values before it."""
    best = x[ni, ci, y0, x0]
    arg = 0
    for k in range(1, 4):
        v = x[ni, ci, y0 + k // 2, x0 + k % 2]
        if best != best:
            break
        if v > best:
            best, arg = v, k
        elif v != v:
            best = v
    return best, arg


@_kernel()
def maxpool2d_2x2(x, out, argmax):  # pragma: no cover - compiled
    """Max over each 2x2 window (stride 2, no padding), argmax the offset ky*2+kx; the first of equal
    values wins. A plane where some window's sum is not a number (a NaN, or +inf beside -inf) is
    redone by the exact slow path, so the hot loop has no NaN branch."""
    n, c = x.shape[:2]
    oh, ow = out.shape[2], out.shape[3]
    if not _pooled_fits(out, argmax, x):
        raise ValueError("maxpool2d_2x2: out and argmax must be (N, C, OH, OW) with OH <= H // 2, OW <= W // 2")
    for ni in prange(n):
        for ci in range(c):
            odd = False
            for oy in range(oh):
                for ox in range(ow):
                    a = x[ni, ci, 2 * oy, 2 * ox]
                    b = x[ni, ci, 2 * oy, 2 * ox + 1]
                    d = x[ni, ci, 2 * oy + 1, 2 * ox]
                    e = x[ni, ci, 2 * oy + 1, 2 * ox + 1]
                    s = a + b + d + e
                    odd |= s != s
                    best, arg = a, 0
                    if b > best:
                        best, arg = b, 1
                    if d > best:
                        best, arg = d, 2
                    if e > best:
                        best, arg = e, 3
                    out[ni, ci, oy, ox] = best
                    argmax[ni, ci, oy, ox] = arg
            if odd:
                for oy in range(oh):
                    for ox in range(ow):
                        out[ni, ci, oy, ox], argmax[ni, ci, oy, ox] = _window_with_nan(x, ni, ci, 2 * oy, 2 * ox)


@_kernel()
def maxpool2d_backward_2x2(dout, argmax, relu_out, dx):  # pragma: no cover - compiled
    """Each window's gradient to its argmax and zero to the other three cells, written row by row
    (a dense, vectorized store instead of zeroing the plane and scattering into it; rows and columns
    no window covers, at odd sizes, are zeroed). With ``relu_out`` (the pooled output, when a ReLU
    feeds the pooling) the gradient is masked by ``relu_out > 0`` on the way: the ReLU's backward
    folded in. The mask multiplies, as the reference's does, so a NaN or inf gradient reaches the
    winner as NaN or inf, and the other three cells get 0."""
    n, c, h, w = dx.shape
    oh, ow = dout.shape[2], dout.shape[3]
    if not (_pooled_fits(dout, argmax, dx) and (relu_out is None or relu_out.shape == dout.shape)):
        raise ValueError("maxpool2d_backward_2x2: dout, argmax (and relu_out) must be (N, C, OH, OW) with "
                         "OH <= H // 2, OW <= W // 2")
    one, zero = dx.dtype.type(1), dx.dtype.type(0)
    for ni in prange(n):
        for ci in range(c):
            for oy in range(oh):
                grad = dout[ni, ci, oy]
                winner = argmax[ni, ci, oy]
                for a in range(2):
                    row = dx[ni, ci, 2 * oy + a]
                    left = 2 * a  # the window cell in this row's even column
                    for ox in range(ow):
                        k = winner[ox]
                        g = grad[ox]
                        if relu_out is not None:  # resolved at compile time: None is its own type
                            g = g * (one if relu_out[ni, ci, oy, ox] > 0 else zero)
                        row[2 * ox] = g if k == left else zero
                        row[2 * ox + 1] = g if k == left + 1 else zero
                    for x in range(2 * ow, w):
                        row[x] = zero
            for y in range(2 * oh, h):
                dx[ni, ci, y] = zero


# -- bias (arrays viewed as (N, C, P): C channels of P values each) ---------------------------------

@_kernel()
def add_bias(y, b):  # pragma: no cover - compiled
    n, c, p = y.shape
    for ni in prange(n):
        for ci in range(c):
            bias = b[ci]
            for i in range(p):
                y[ni, ci, i] += bias


@_kernel(fastmath={"reassoc", "contract"})
def bias_grad(dout, db):  # pragma: no cover - compiled
    """db[c] = the sum of dout over images and positions (reassociated, so that it vectorizes)."""
    n, c, p = dout.shape
    for ci in range(c):
        s = db.dtype.type(0)
        for ni in prange(n):
            for i in range(p):
                s += dout[ni, ci, i]
        db[ci] = s


@_kernel()
def add_bias_relu(y, b):  # pragma: no cover - compiled
    """y = relu(y + b[c]) in place (a layer's bias and its ReLU in one pass); NaN passes through."""
    n, c, p = y.shape
    zero = y.dtype.type(0)
    for ni in prange(n):
        for ci in range(c):
            bias = b[ci]
            for i in range(p):
                v = y[ni, ci, i] + bias
                y[ni, ci, i] = zero if v <= 0 else v


@_kernel(fastmath={"reassoc", "contract"})
def relu_bias_grad(dout, y, dz, db):  # pragma: no cover - compiled
    """dz = dout * (y > 0) and db[c] = the sum of dz over images and positions, in one pass."""
    n, c, p = dout.shape
    one, zero = dz.dtype.type(1), dz.dtype.type(0)
    for ci in range(c):
        s = zero
        for ni in prange(n):
            for i in range(p):
                d = dout[ni, ci, i] * (one if y[ni, ci, i] > 0 else zero)
                dz[ni, ci, i] = d
                s += d
        db[ci] = s


# -- activations (flat, contiguous arrays) ----------------------------------------------------------

@_kernel()
def relu(x, y):  # pragma: no cover - compiled
    for i in prange(x.size):
        y[i] = y.dtype.type(0) if x[i] <= 0 else x[i]  # NaN passes through, as in the reference


@_kernel()
def relu_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] * (dx.dtype.type(1) if y[i] > 0 else dx.dtype.type(0))  # NaN * 0 stays NaN


def sigmoid(x, y):
    """y = sigmoid(x); float32 goes through its own kernel, whose exp vectorizes."""
    (_sigmoid_float32 if x.dtype == np.float32 else _sigmoid)(x, y)


@_kernel()
def _sigmoid(x, y):  # pragma: no cover - compiled
    for i in prange(x.size):
        e = math.exp(-abs(x[i]))
        y[i] = 1 / (1 + e) if x[i] >= 0 else e / (1 + e)


_LN_TINY_F32 = np.float32(-87.33654)  # ln of float32's smallest normal number, 2**-126


@njit(inline="always", **_JIT)
def _exp_nonpositive_f32(x):
    """exp(x) for float32 x <= 0 (or NaN) in straight-line arithmetic that LLVM vectorizes, where
    Numba's scalar expf call does not: Cephes expf (range reduction by ln 2, a degree-6 polynomial,
    2**n assembled from its exponent bits); relative error under 2e-7. Below ln(2**-126) = -87.3365,
    where exp(x) leaves float32's normal range, it returns 0 instead of a subnormal."""
    xc = max(x, _LN_TINY_F32)
    n = np.floor(xc * np.float32(1.44269504088896341) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1)
    two_n = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return np.float32(0) if x < _LN_TINY_F32 else p * two_n


@_kernel()
def _sigmoid_float32(x, y):  # pragma: no cover - compiled
    """float32 sigmoid through :func:`_exp_nonpositive_f32`; exp is only taken of -|x|."""
    for i in prange(x.size):
        v = x[i]
        e = _exp_nonpositive_f32(-abs(v))
        s = np.float32(1) / (np.float32(1) + e)
        y[i] = s if v >= 0 else e * s


@_kernel()
def sigmoid_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] * y[i] * (dx.dtype.type(1) - y[i])


@_kernel()
def tanh_backward(dout, y, dx):  # pragma: no cover - compiled
    for i in prange(dout.size):
        dx[i] = dout[i] * (dx.dtype.type(1) - y[i] * y[i])


# -- softmax-cross-entropy (rows of a contiguous (N, K) matrix) ---------------------------------------

@njit(inline="always", **_JIT)
def _shifted_exp_row(logits, i, grad):  # pragma: no cover - compiled
    """grad[i] = exp(logits[i] - max); returns (max, sum of grad[i])."""
    k = logits.shape[1]
    m = logits[i, 0]
    for j in range(1, k):
        m = max(m, logits[i, j])
    s = 0.0
    for j in range(k):
        grad[i, j] = math.exp(logits[i, j] - m)
        s += grad[i, j]
    return m, s


@_kernel()
def softmax_cross_entropy_labels(logits, labels, grad):  # pragma: no cover - compiled
    """Gradient (softmax - onehot) / N into ``grad``; returns the mean loss, log-sum-exp per row. A
    label outside [0, K) makes its row's loss and gradient NaN, as in the reference."""
    n, k = logits.shape
    total = 0.0
    for i in range(n):
        m, s = _shifted_exp_row(logits, i, grad)
        t = labels[i]
        if t < 0 or t >= k:
            total += math.nan
            for j in range(k):
                grad[i, j] = math.nan
            continue
        total += math.log(s) - (logits[i, t] - m)
        scale = 1.0 / (s * n)
        for j in range(k):
            grad[i, j] *= scale
        grad[i, t] -= 1.0 / n
    return total / n


@_kernel()
def softmax_cross_entropy_probs(logits, target, grad):  # pragma: no cover - compiled
    """Gradient (softmax - target) / N into ``grad``; returns the mean of sum_j t_j (lse - z_j)."""
    n, k = logits.shape
    total = 0.0
    for i in range(n):
        m, s = _shifted_exp_row(logits, i, grad)
        log_z = math.log(s)
        for j in range(k):
            total += target[i, j] * (log_z - (logits[i, j] - m))
            grad[i, j] = (grad[i, j] / s - target[i, j]) / n
    return total / n


# -- optimizer updates (flat, contiguous, in place; scalars in the arrays' dtype) ---------------------

@_kernel()
def sgd_update(p, g, lr):  # pragma: no cover - compiled
    for i in prange(p.size):
        p[i] -= lr * g[i]


@njit(inline="always", **_JIT)
def _flush_subnormal(x, tiny):
    """x, or zero where |x| < tiny (the dtype's smallest normal number, passed by the backend in
    that dtype); NaN stays NaN. Decaying optimizer state goes through it, as
    ``reference.flush_subnormal`` explains."""
    return tiny - tiny if abs(x) < tiny else x  # a zero of tiny's type, with no subnormal arithmetic


@_kernel()
def sgd_update_momentum(p, g, v, lr, momentum, nesterov, tiny):  # pragma: no cover - compiled
    for i in prange(p.size):
        v[i] = _flush_subnormal(momentum * v[i] + g[i], tiny)
        p[i] -= lr * (g[i] + momentum * v[i]) if nesterov else lr * v[i]


@_kernel()
def adagrad_update(p, g, s, lr, eps):  # pragma: no cover - compiled
    for i in prange(p.size):
        s[i] += g[i] * g[i]
        p[i] -= lr * g[i] / (np.sqrt(s[i]) + eps)


@_kernel()
def rmsprop_update(p, g, s, lr, rho, one_minus_rho, eps, tiny):  # pragma: no cover - compiled
    for i in prange(p.size):
        s[i] = _flush_subnormal(rho * s[i] + one_minus_rho * g[i] * g[i], tiny)
        p[i] -= lr * g[i] / (np.sqrt(s[i]) + eps)


@_kernel()
def adam_update(p, g, m, v, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2, eps_t, tiny):  # pragma: no cover
    """One Adam step with the bias corrections folded into ``lr_t`` and ``eps_t`` (reference.adam_scalars)."""
    for i in prange(p.size):
        m[i] = _flush_subnormal(beta1 * m[i] + one_minus_beta1 * g[i], tiny)
        v[i] = _flush_subnormal(beta2 * v[i] + one_minus_beta2 * g[i] * g[i], tiny)
        p[i] -= m[i] / (np.sqrt(v[i]) + eps_t) * lr_t  # the reference's order of operations
