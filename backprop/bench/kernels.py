"""Micro-benchmarks of every backend kernel at the shapes training gives them.

Every public kernel of :class:`~backprop.backends.Backend` (each one with a ``_name`` implementation a
backend may override) runs on every backend asked for, at SimpleConvNet's first layer and at a
CIFAR-like 3x32x32 convolution. Each is called once to warm up (Numba compiles, NVRTC compiles), then
timed with the backend synchronized inside the clock; over ``rounds`` rounds the backends take turns
kernel by kernel, so the machine's drift hits them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from backprop.backends import Backend
from backprop.bench.stats import spread, timed_calls
from backprop.kernels.reference import adam_scalars, conv_output_size


class Shape(NamedTuple):
    """A convolution layer's input and window, followed by 2x2 pooling."""

    x: tuple[int, int, int, int]  # N, C, H, W
    out_channels: int
    kernel: int
    pad: int


SHAPES = {
    "simpleconvnet": Shape((100, 1, 28, 28), 30, 5, 0),
    "cifar": Shape((64, 3, 32, 32), 64, 3, 1),
}
# Every public kernel: the methods backends implement through ``_name``.
KERNELS = tuple(n for n in dir(Backend) if not n.startswith("_") and callable(getattr(Backend, "_" + n, None)))


def cases(backend: Backend, shape: Shape) -> dict[str, Callable[[], object]]:
    """One call of each kernel on ``shape``'s arrays, on ``backend`` (the same random values for all)."""
    rng = np.random.default_rng(0)
    n, c, h, w = shape.x
    k, o = (shape.kernel, shape.kernel), shape.out_channels
    one, none = (1, 1), (shape.pad, shape.pad)
    oh, ow = conv_output_size(h, k[0], 1, none[0]), conv_output_size(w, k[1], 1, none[1])
    ckk = c * k[0] * k[1]

    def a(*dims: int) -> Any:
        return backend.asarray(rng.standard_normal(dims))

    x, W, b = a(*shape.x), a(o, c, *k), a(o)
    col = a(ckk, n * oh * ow).T  # the column-major patch matrix im2col returns
    act, y = a(n, o, oh, ow), backend.relu(a(n, o, oh, ow))
    dW, db = backend.zeros(W.shape), backend.zeros(o)
    out, cache = backend.conv2d_forward(x, W, b, one, none)
    pool, nopad = (2, 2), (0, 0)
    pooled, argmax = backend.maxpool2d(act, pool, pool, nopad)
    pooled_relu, argmax_relu = backend.maxpool2d_relu(act, pool, pool, nopad)
    logits, labels = a(n, 10), backend.asarray(rng.integers(0, 10, n))
    probs = backend.softmax(logits)
    p = a(o * ckk * 100)  # a Linear layer's worth of weights
    g = a(p.size)
    velocity, sum_sq, mean_sq, m, v = (backend.zeros(p.size) for _ in range(5))  # each optimizer's own state
    lr_t, eps_t = adam_scalars(1e-3, 0.9, 0.999, 1e-8, 1)
    sigmoid, tanh = backend.sigmoid(act), backend.tanh(act)
    return {
        "matmul": lambda: backend.matmul(col, W.reshape(o, ckk).T),
        "im2col": lambda: backend.im2col(x, k, one, none),
        "col2im": lambda: backend.col2im(col, shape.x, k, one, none),
        "conv2d_forward": lambda: backend.conv2d_forward(x, W, b, one, none),
        "conv2d_backward": lambda: backend.conv2d_backward(out, cache, W, dW, db),
        "add_bias": lambda: backend.add_bias(act, b),
        "add_bias_relu": lambda: backend.add_bias_relu(act, b),
        "relu_bias_grad": lambda: backend.relu_bias_grad(act, y, db),
        "bias_grad": lambda: backend.bias_grad(act, db),
        "relu": lambda: backend.relu(act),
        "relu_backward": lambda: backend.relu_backward(act, y),
        "sigmoid": lambda: backend.sigmoid(act),
        "sigmoid_backward": lambda: backend.sigmoid_backward(act, sigmoid),
        "tanh": lambda: backend.tanh(act),
        "tanh_backward": lambda: backend.tanh_backward(act, tanh),
        "maxpool2d": lambda: backend.maxpool2d(act, pool, pool, nopad),
        "maxpool2d_backward": lambda: backend.maxpool2d_backward(pooled, argmax, act.shape, pool, pool, nopad),
        "maxpool2d_relu": lambda: backend.maxpool2d_relu(act, pool, pool, nopad),
        "maxpool2d_relu_backward": lambda: backend.maxpool2d_relu_backward(pooled_relu, pooled_relu, argmax_relu,
                                                                           act.shape, pool, pool, nopad),
        "softmax": lambda: backend.softmax(logits),
        "softmax_backward": lambda: backend.softmax_backward(logits, probs),
        "softmax_cross_entropy": lambda: backend.softmax_cross_entropy(logits, labels),
        "sgd_update": lambda: backend.sgd_update(p, g, velocity, 1e-3, 0.9, False),
        "adagrad_update": lambda: backend.adagrad_update(p, g, sum_sq, 1e-3, 1e-8),
        "rmsprop_update": lambda: backend.rmsprop_update(p, g, mean_sq, 1e-3, 0.9, 1e-8),
        "adam_update": lambda: backend.adam_update(p, g, m, v, lr_t, 0.9, 0.999, eps_t),
    }


def time_kernels(backends: Mapping[str, Backend], shapes: Mapping[str, Shape] = SHAPES, rounds: int = 5,
                 min_seconds: float = 0.02, say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Seconds per call of every kernel x shape x backend: one row each, with the spread over rounds."""
    rows = []
    for shape_name, shape in shapes.items():
        calls = {name: cases(backend, shape) for name, backend in backends.items()}
        for name, backend in backends.items():  # warm-up: compile, caches, the allocator's pools
            for call in calls[name].values():
                call()
            backend.synchronize()
        samples: dict[tuple[str, str], list[float]] = {(k, b): [] for k in KERNELS for b in backends}
        for _ in range(rounds):
            for kernel in KERNELS:
                for name, backend in backends.items():
                    samples[kernel, name].append(timed_calls(calls[name][kernel], backend.synchronize, min_seconds))
        for (kernel, name), seconds in samples.items():
            rows.append({"kernel": kernel, "shape": shape_name, "backend": name, "seconds": spread(seconds)})
        say(f"kernels at the {shape_name} shape {shape.x}: {len(KERNELS)} kernels x {len(backends)} backends timed")
    return rows
