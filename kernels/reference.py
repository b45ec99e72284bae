"""Reference kernels, written once against an array module ``xp``.

Every function takes the array module (``numpy`` or ``cupy``) as its first argument, so the same code is
the NumPy backend and the starting point of the CuPy backend, and every faster kernel is tested against
it. The code is vectorized: the only Python loops run over a kernel window's offsets (kh x kw), never
over the batch or over pixels. Arrays are allocated with the input's dtype so float32 stays float32.

Layouts follow the classic from-scratch convolution:
  images are NCHW; ``im2col`` returns a (N*OH*OW, C*KH*KW) matrix whose row r = (n, oy, ox) holds the
  patch under output pixel (oy, ox) of image n, its columns ordered (c, ky, kx).
"""

from __future__ import annotations

from typing import Any

Pair = tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a convolution or pooling window sliding over one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def _windows(xp: Any, xpad: Any, kernel: Pair, stride: Pair, out: Pair) -> Any:
    """A read-only (N, C, OH, OW, KH, KW) view of every window of a padded NCHW image; no copy."""
    n, c = xpad.shape[:2]
    sn, sc, sh, sw = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad,
        shape=(n, c, out[0], out[1], kernel[0], kernel[1]),
        strides=(sn, sc, sh * stride[0], sw * stride[1], sh, sw),
    )


def _pad(xp: Any, x: Any, pad: Pair, value: float = 0.0) -> Any:
    if pad == (0, 0):
        return x
    widths = ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1]))
    return xp.pad(x, widths, mode="constant", constant_values=value)


def im2col(xp: Any, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> Any:
    """Unfold NCHW images into the (N*OH*OW, C*KH*KW) patch matrix (one gather copy)."""
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel[0], stride[0], pad[0])
    ow = conv_output_size(w, kernel[1], stride[1], pad[1])
    win = _windows(xp, _pad(xp, x, pad), kernel, stride, (oh, ow))
    col = xp.empty((n, oh, ow, c, kernel[0], kernel[1]), dtype=x.dtype)
    col[...] = win.transpose(0, 2, 3, 1, 4, 5)
    return col.reshape(n * oh * ow, c * kernel[0] * kernel[1])


def col2im(xp: Any, col: Any, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, pad: Pair) -> Any:
    """Adjoint of ``im2col``: scatter-add every patch back to its image position, then crop the padding."""
    n, c, h, w = x_shape
    kh, kw = kernel
    sh, sw = stride
    oh = conv_output_size(h, kh, sh, pad[0])
    ow = conv_output_size(w, kw, sw, pad[1])
    patches = col.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)  # (N, C, KH, KW, OH, OW)
    img = xp.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=col.dtype)
    for ky in range(kh):
        for kx in range(kw):
            img[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += patches[:, :, ky, kx]
    return img[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def maxpool2d(xp: Any, x: Any, kernel: Pair, stride: Pair, pad: Pair) -> tuple[Any, Any]:
    """Max over each window, padded with -inf; returns (out, argmax) with argmax the offset ky*KW+kx.

    The max is a running maximum over the KH*KW strided views of the image, which touches each input
    element KH*KW/(SH*SW) times and never builds the im2col matrix. Ties keep the first offset, as
    PyTorch does, so exactly one input of each window receives the gradient.
    """
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel[0], stride[0], pad[0])
    ow = conv_output_size(w, kernel[1], stride[1], pad[1])
    win = _windows(xp, _pad(xp, x, pad, -xp.inf), kernel, stride, (oh, ow))
    out = win[..., 0, 0].copy()
    argmax = xp.zeros((n, c, oh, ow), dtype=xp.int8 if kernel[0] * kernel[1] < 128 else xp.int32)
    for k in range(1, kernel[0] * kernel[1]):
        view = win[..., k // kernel[1], k % kernel[1]]
        better = view > out
        xp.copyto(argmax, k, where=better)
        xp.maximum(out, view, out=out)
    return out, argmax


def maxpool2d_backward(xp: Any, dout: Any, argmax: Any, x_shape: tuple[int, ...], kernel: Pair,
                       stride: Pair, pad: Pair) -> Any:
    """Route each output gradient to the input that won its window's max."""
    n, c, h, w = x_shape
    oh, ow = dout.shape[2:]
    sh, sw = stride
    dx = xp.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=dout.dtype)
    zero = xp.zeros((), dtype=dout.dtype)
    for k in range(kernel[0] * kernel[1]):
        ky, kx = divmod(k, kernel[1])
        dx[:, :, ky:ky + sh * oh:sh, kx:kx + sw * ow:sw] += xp.where(argmax == k, dout, zero)
    return dx[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def relu(xp: Any, x: Any) -> Any:
    return xp.maximum(x, 0)


def relu_backward(xp: Any, dout: Any, y: Any) -> Any:
    """Gradient through ReLU given its output y (y > 0 exactly where the input was > 0)."""
    return dout * (y > 0)


def sigmoid(xp: Any, x: Any) -> Any:
    """Logistic function without overflow: exp is only taken of -|x|."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(xp: Any, dout: Any, y: Any) -> Any:
    return dout * y * (1 - y)


def tanh(xp: Any, x: Any) -> Any:
    return xp.tanh(x)


def tanh_backward(xp: Any, dout: Any, y: Any) -> Any:
    return dout * (1 - y * y)


def softmax(xp: Any, x: Any) -> Any:
    """Softmax over the last axis, shifted by the row max so exp never overflows."""
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_backward(xp: Any, dout: Any, y: Any) -> Any:
    """Jacobian-vector product of softmax: y * (dout - <dout, y>), without building the Jacobian."""
    return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(xp: Any, logits: Any, target: Any) -> tuple[Any, Any]:
    """Mean cross-entropy of softmax(logits) against integer labels (N,) or probabilities (N, K).

    Returns (loss, dlogits) where loss is a 0-d array, computed through log-sum-exp so that large
    logits neither overflow nor lose the answer, and dlogits = (softmax - target) / N.
    """
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sumexp = exp.sum(axis=1, keepdims=True)
    log_z = xp.log(sumexp)
    grad = exp / sumexp
    if target.ndim == 1:
        rows = xp.arange(n)
        loss = (log_z[:, 0] - shifted[rows, target]).sum() / n
        grad[rows, target] -= 1
    else:
        loss = (target * (log_z - shifted)).sum() / n
        grad -= target
    grad /= n
    return loss, grad


def sgd_update(xp: Any, p: Any, g: Any, velocity: Any | None, lr: float, momentum: float,
               nesterov: bool) -> None:
    """In-place SGD step; with momentum, velocity v <- momentum * v + g (PyTorch's convention)."""
    if velocity is None:
        p -= lr * g
        return
    velocity *= momentum
    velocity += g
    if nesterov:
        p -= lr * (g + momentum * velocity)
    else:
        p -= lr * velocity


def adagrad_update(xp: Any, p: Any, g: Any, sum_sq: Any, lr: float, eps: float) -> None:
    sum_sq += g * g
    p -= lr * g / (xp.sqrt(sum_sq) + eps)


def rmsprop_update(xp: Any, p: Any, g: Any, mean_sq: Any, lr: float, rho: float, eps: float) -> None:
    mean_sq *= rho
    mean_sq += (1 - rho) * g * g
    p -= lr * g / (xp.sqrt(mean_sq) + eps)


def adam_update(xp: Any, p: Any, g: Any, m: Any, v: Any, lr: float, beta1: float, beta2: float,
                eps: float, step: int) -> None:
    """In-place Adam step with bias correction; ``step`` counts from 1."""
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    lr_t = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step)
    eps_t = eps * (1 - beta2 ** step) ** 0.5
    p -= lr_t * m / (xp.sqrt(v) + eps_t)
