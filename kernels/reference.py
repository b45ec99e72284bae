"""Reference kernels, written once against an array module ``xp``.

Every function takes the array module (``numpy`` or ``cupy``) as its first argument, so the same code is
the NumPy backend and the starting point of the CuPy backend, and every faster kernel is tested against
it. The code is vectorized: the only Python loops run over a kernel window's offsets (kh x kw), never
over the batch or over pixels. Arrays are allocated with the input's dtype so float32 stays float32.

Layouts follow the classic from-scratch convolution:
  images are NCHW; ``im2col`` returns a (N*OH*OW, C*KH*KW) matrix whose row r = (n, oy, ox) holds the
  patch under output pixel (oy, ox) of image n, its columns ordered (c, ky, kx). Its memory, though,
  is column-major (the transpose of a C-contiguous (C*KH*KW, N*OH*OW) array); code that needs a
  C-contiguous matrix copies it with ``xp.ascontiguousarray``.

Speed notes (NumPy): the expensive operations are not the arithmetic but passes over memory and
strided access. A ufunc over a strided view, or over many short rows, runs several times slower than
over one contiguous block, so the kernels gather strided data once into contiguous arrays, arrange
copies so that they move whole planes, and write results with ``out=`` instead of temporaries.
"""

from __future__ import annotations

from typing import Any

from backprop.kernels.arrays import Array, Scalar

Pair = tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a convolution or pooling window sliding over one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def _span(k: int, stride: int, out: int) -> slice:
    """The slice of a padded axis that window offset ``k`` reads for ``out`` outputs of ``stride``."""
    return slice(k, k + stride * (out - 1) + 1, stride)


def _bits(xp: Any, a: Array) -> Array:
    """``a``'s bit patterns as integers of its width (a view). Multiplying them by a 0/1 mask selects
    exactly, where a float product would turn inf * 0 into NaN and -x * 0 into a negative zero."""
    return a.view({4: xp.int32, 8: xp.int64}[a.dtype.itemsize])


def _pad(xp: Any, x: Array, pad: Pair, value: float = 0.0) -> Array:
    if pad == (0, 0):
        return x
    widths = ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1]))
    return xp.pad(x, widths, mode="constant", constant_values=value)


def im2col(xp: Any, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> Array:
    """Unfold NCHW images into the (N*OH*OW, C*KH*KW) patch matrix.

    The matrix is returned as the transpose of a C-contiguous (C*KH*KW, N*OH*OW) array, i.e. its memory
    is laid out (C, KH, KW, N, OH, OW): the values and the (row, column) order are those of the
    classic layout, but every (c, ky, kx) column is one contiguous block. Filling a block copies whole
    image rows (no transposed copy afterwards), and a convolution can use it per image as a (CKK, OH*OW)
    matrix, so that its output comes out in NCHW order directly. For stride 1 along y, each kernel
    column kx is first cut out of the image once (KW copies), so that the KH*KW block copies run over
    whole (OH*OW) planes instead of OW-long row pieces.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride
    oh = conv_output_size(h, kh, sh, pad[0])
    ow = conv_output_size(w, kw, sw, pad[1])
    xt = _pad(xp, x, pad).transpose(1, 0, 2, 3)  # (C, N, Hp, Wp), a view
    col = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for kx in range(kw):
        src = xt[:, :, :, _span(kx, sw, ow)]
        if sh == 1 and kh > 1:
            src = xp.ascontiguousarray(src)  # (C, N, Hp, OW): rows ky..ky+OH are one block
        for ky in range(kh):
            col[:, ky, kx] = src[:, :, _span(ky, sh, oh)]
    return col.reshape(c * kh * kw, n * oh * ow).T


def col2im(xp: Any, col: Array, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Array:
    """Adjoint of ``im2col``: scatter-add every patch back to its image position, then crop the padding.

    Any memory layout of ``col`` is accepted; the layout ``im2col`` returns (each (c, ky, kx) column
    contiguous) is the fast one. For stride 1 along y, the patches of each kernel column kx are first
    summed into a (C, N, Hp, OW) plane, where the KH shifted adds run over whole planes, and only then
    added to the image (KW adds of OW-long row pieces instead of KH*KW).
    """
    n, c, h, w = x_shape
    kh, kw = kernel
    sh, sw = stride
    oh = conv_output_size(h, kh, sh, pad[0])
    ow = conv_output_size(w, kw, sw, pad[1])
    hp, wp = h + 2 * pad[0], w + 2 * pad[1]
    patches = col.reshape(n, oh, ow, c, kh, kw).transpose(3, 4, 5, 0, 1, 2)  # (C, KH, KW, N, OH, OW)
    img = xp.zeros((n, c, hp, wp), dtype=col.dtype)
    img_t = img.transpose(1, 0, 2, 3)  # (C, N, Hp, Wp) view
    plane = xp.empty((c, n, hp, ow), dtype=col.dtype) if sh == 1 and kh > 1 else None
    for kx in range(kw):
        dst = img_t[:, :, :, _span(kx, sw, ow)]
        if plane is None:
            for ky in range(kh):
                dst[:, :, _span(ky, sh, oh)] += patches[:, ky, kx]
            continue
        plane[:, :, oh:] = 0
        plane[:, :, :oh] = patches[:, 0, kx]
        for ky in range(1, kh):
            plane[:, :, ky:ky + oh] += patches[:, ky, kx]
        dst += plane
    if pad == (0, 0):
        return img
    return img[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def maxpool2d(xp: Any, x: Array, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Array, Array]:
    """Max over each window, padded with -inf; returns (out, argmax) with argmax the offset ky*KW+kx.

    A running maximum over the KH*KW window offsets, on contiguous copies of each offset's strided
    view of the image: strided elementwise operations are several times slower than contiguous ones,
    so each view is gathered once and compared many times. When the windows tile the image (stride ==
    kernel, the usual pooling), all offsets are gathered by a single transposing copy, which reads the
    image once. Ties keep the first offset, as PyTorch does, so exactly one input of each window
    receives the gradient. ``argmax`` is int8 (int32 for windows of 128 or more cells); it is updated
    with an elementwise maximum, which is valid because the offsets are visited in increasing order.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride
    oh = conv_output_size(h, kh, sh, pad[0])
    ow = conv_output_size(w, kw, sw, pad[1])
    xpad = _pad(xp, x, pad, -xp.inf)
    index_dtype = xp.int8 if kh * kw < 128 else xp.int32
    if (sh, sw) == (kh, kw):
        tiles = xpad[:, :, :kh * oh, :kw * ow].reshape(n, c, oh, kh, ow, kw)
        offsets = tiles.transpose(3, 5, 0, 1, 2, 4).reshape(kh * kw, n, c, oh, ow)  # one copy
        scratch = None
    else:
        offsets = None
        scratch = xp.empty((n, c, oh, ow), dtype=x.dtype)

    def gathered(k: int, into: Array) -> Array:
        """Offset k's values for every window, contiguous (copied into ``into`` unless tiled)."""
        if offsets is not None:
            return offsets[k]
        into[...] = xpad[:, :, _span(k // kw, sh, oh), _span(k % kw, sw, ow)]
        return into

    if kh * kw == 1:
        return gathered(0, scratch).copy(), xp.zeros((n, c, oh, ow), dtype=index_dtype)
    # Offsets 0 and 1 start the running maximum, which is then a fresh array (the gathered copies
    # are scratch) and argmax needs no zero fill.
    first = gathered(0, None if offsets is not None else xp.empty_like(scratch))
    cur = gathered(1, scratch)
    argmax = (cur > first).astype(index_dtype)
    out = xp.maximum(first, cur, out=None if offsets is not None else first)
    for k in range(2, kh * kw):
        cur = gathered(k, scratch)
        better = cur > out
        xp.maximum(argmax, better * index_dtype(k), out=argmax)
        xp.maximum(out, cur, out=out)
    return out, argmax


def maxpool2d_backward(xp: Any, dout: Array, argmax: Array, x_shape: tuple[int, ...], kernel: Pair,
                       stride: Pair, pad: Pair) -> Array:
    """Route each output gradient to the input that won its window's max.

    When windows do not overlap (stride >= kernel), each input belongs to at most one window, so each
    offset's gradient is written, not added, and when they also tile the padded image exactly, the
    result needs no zero fill.
    """
    n, c, h, w = x_shape
    kh, kw = kernel
    sh, sw = stride
    oh, ow = dout.shape[2:]
    hp, wp = h + 2 * pad[0], w + 2 * pad[1]
    disjoint = sh >= kh and sw >= kw
    tiled = (sh, sw) == (kh, kw) and (hp, wp) == (sh * oh, sw * ow)
    dx = (xp.empty if tiled else xp.zeros)((n, c, hp, wp), dtype=dout.dtype)
    bits = _bits(xp, dout)
    for k in range(kh * kw):
        ky, kx = divmod(k, kw)
        dst = dx[:, :, _span(ky, sh, oh), _span(kx, sw, ow)]
        # dout where this offset won, else 0 (an inf gradient stays inf beside the winner), as fast as a
        # float product and with no check of the values (a host read, a wait on a GPU).
        if disjoint:
            xp.multiply(bits, argmax == k, out=dst.view(bits.dtype))
        else:
            dst += (bits * (argmax == k)).view(dout.dtype)
    if pad == (0, 0):
        return dx
    return dx[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def add_bias(xp: Any, y: Array, b: Array) -> None:
    """In place: y[n, c, ...] += b[c] (a layer's bias over its channel axis, axis 1)."""
    y += b.reshape((-1,) + (1,) * (y.ndim - 2))


def bias_grad(xp: Any, dout: Array, out: Array) -> None:
    """out[c] = the sum of dout[n, c, ...] over every axis but the channel axis (axis 1)."""
    dout.sum(axis=(0, *range(2, dout.ndim)), out=out)


def relu(xp: Any, x: Array) -> Array:
    return xp.maximum(x, 0)


def relu_backward(xp: Any, dout: Array, y: Array) -> Array:
    """Gradient through ReLU given its output y (y > 0 exactly where the input was > 0).

    The mask is cast to the gradient's dtype once and multiplied in place: a float-by-float product
    runs faster than one that converts a boolean operand as it goes.
    """
    dx = (y > 0).astype(dout.dtype)
    dx *= dout
    return dx


def sigmoid(xp: Any, x: Array) -> Array:
    """Logistic function without overflow: exp is only taken of -|x|."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(xp: Any, dout: Array, y: Array) -> Array:
    return dout * y * (1 - y)


def tanh(xp: Any, x: Array) -> Array:
    return xp.tanh(x)


def tanh_backward(xp: Any, dout: Array, y: Array) -> Array:
    return dout * (1 - y * y)


def softmax(xp: Any, x: Array) -> Array:
    """Softmax over the last axis, shifted by the row max so exp never overflows."""
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_backward(xp: Any, dout: Array, y: Array) -> Array:
    """Jacobian-vector product of softmax: y * (dout - <dout, y>), without building the Jacobian."""
    return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(xp: Any, logits: Array, target: Array) -> tuple[Array, Array]:
    """Mean cross-entropy of softmax(logits) against integer labels (N,) or probabilities (N, K).

    Returns (loss, dlogits) where loss is a 0-d array, computed through log-sum-exp so that large
    logits neither overflow nor lose the answer, and dlogits = (softmax - target) / N.

    A label outside [0, K) makes its row's loss, and so the mean, NaN, and its gradient row NaN, on
    every backend: kernels neither raise nor read labels back to the host (on a GPU that would
    synchronize every step), so callers check labels once, before training.
    """
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sumexp = exp.sum(axis=1, keepdims=True)
    log_z = xp.log(sumexp)
    grad = exp / sumexp
    divisor = n
    if target.ndim == 1:
        rows = xp.arange(n)
        valid = (target >= 0) & (target < logits.shape[1])
        label = xp.where(valid, target, 0)  # in bounds: a negative label must not wrap around
        nan = logits.dtype.type(xp.nan)
        loss = xp.where(valid, log_z[:, 0] - shifted[rows, label], nan).sum() / n
        grad[rows, label] -= 1
        divisor = xp.where(valid, logits.dtype.type(n), nan)[:, None]
    else:
        loss = (target * (log_z - shifted)).sum() / n
        grad -= target
    grad /= divisor
    return loss, grad


def prediction_hits(xp: Any, logits: Array, target: Array, out: Array) -> None:
    """out[i] = 1 where row i's largest logit is its class (the label, or the largest target
    probability; the first of equal ones, as argmax takes it), else 0: what softmax_cross_entropy's
    ``hits`` receives, so that accuracy needs no pass of its own."""
    labels = target if target.ndim == 1 else target.argmax(axis=1)
    xp.equal(logits.argmax(axis=1), labels, out=out, casting="unsafe")


def flush_subnormal(xp: Any, state: Array) -> None:
    """Set entries of an optimizer's decaying state (momentum, running squares) smaller in magnitude
    than the dtype's smallest normal number to zero, in place; NaN stays NaN.

    A weight whose gradient stays zero (an input a dead ReLU or a blank image border never feeds) has
    its momentum decay geometrically, and it then spends ~150 steps as a subnormal number before it
    underflows to zero. x86 CPUs compute with subnormals 10-100x slower: after 5 epochs of MNIST a
    quarter of SimpleConvNet's 4320x100 Adam momentum was subnormal, and the Adam step on that weight
    took 8x longer (bench/results/). Values below 1.2e-38 (float32) cannot move a weight while eps
    is positive (the optimizers require it), so training is unchanged; TensorFlow flushes
    subnormals on the CPU for the same reason. AdaGrad's sum of squares never decays and needs no
    flush.
    """
    bits = _bits(xp, state)  # times "not tiny": flushed entries become +0, NaN stays (~3x copyto's speed)
    xp.multiply(bits, ~(xp.abs(state) < xp.finfo(state.dtype).tiny), out=bits)


def sgd_update(xp: Any, p: Array, g: Array, velocity: Array | None, lr: Scalar, momentum: float,
               nesterov: bool) -> None:
    """In-place SGD step; with momentum, velocity v <- momentum * v + g (PyTorch's convention)."""
    if velocity is None:
        p -= lr * g
        return
    velocity *= momentum
    velocity += g
    flush_subnormal(xp, velocity)
    if nesterov:
        p -= lr * (g + momentum * velocity)
    else:
        p -= lr * velocity


def adagrad_update(xp: Any, p: Array, g: Array, sum_sq: Array, lr: Scalar, eps: float) -> None:
    sum_sq += g * g
    p -= lr * g / (xp.sqrt(sum_sq) + eps)


def rmsprop_update(xp: Any, p: Array, g: Array, mean_sq: Array, lr: Scalar, rho: float, eps: float) -> None:
    mean_sq *= rho
    mean_sq += (1 - rho) * g * g
    flush_subnormal(xp, mean_sq)
    p -= lr * g / (xp.sqrt(mean_sq) + eps)


def adam_scalars(lr: float, beta1: float, beta2: float, eps: float, step: int) -> tuple[float, float]:
    """(lr_t, eps_t): the bias corrections of step ``step`` (from 1) folded into the step size and
    epsilon, so that lr_t * m / (sqrt(v) + eps_t) is lr * m_hat / (sqrt(v_hat) + eps). Computed once
    per step (by the optimizer), for every parameter and every backend."""
    correction = (1 - beta2 ** step) ** 0.5
    return lr * correction / (1 - beta1 ** step), eps * correction


def adam_update(xp: Any, p: Array, g: Array, m: Array, v: Array, lr_t: Scalar, beta1: float, beta2: float,
                eps_t: Scalar) -> None:
    """In-place Adam step whose bias corrections are folded into ``lr_t`` and ``eps_t`` (:func:`adam_scalars`).

    Every intermediate goes through one scratch array (``out=``), so a step allocates once per
    parameter instead of once per operation.
    """
    tmp = xp.empty_like(p)
    m *= beta1
    xp.multiply(g, 1 - beta1, out=tmp)
    m += tmp
    v *= beta2
    xp.multiply(g, 1 - beta2, out=tmp)
    tmp *= g
    v += tmp
    flush_subnormal(xp, m)
    flush_subnormal(xp, v)
    xp.sqrt(v, out=tmp)
    tmp += eps_t
    xp.divide(m, tmp, out=tmp)
    tmp *= lr_t
    p -= tmp
