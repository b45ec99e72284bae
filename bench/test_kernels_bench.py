"""Micro-benchmarks of every hot kernel on every available backend, grouped so that the backends of one
kernel at one shape sit side by side. Warm-up (JIT compile, NVRTC) happens before timing; device
backends are synchronized inside the timed call.

    pytest bench/test_kernels_bench.py --benchmark-only --benchmark-json=bench/results/kernels.json
    python bench/kernels_table.py bench/results/kernels.json     # the backends side by side, Markdown
"""

from __future__ import annotations

import numpy as np
import pytest

from backprop.backends import available_backends, get_backend, known_backends
from backprop.kernels.reference import adam_scalars, conv_output_size

# name -> (N, C, H, W), out channels, kernel, stride, pad, pool
SHAPES = {
    "simpleconvnet": ((100, 1, 28, 28), 30, (5, 5), (1, 1), (0, 0), 2),
    "cifar": ((64, 3, 32, 32), 64, (3, 3), (1, 1), (1, 1), 2),
}
BACKENDS = [pytest.param(n, marks=[pytest.mark.gpu] if n == "cupy" else []) for n in known_backends()]


@pytest.fixture(params=BACKENDS)
def backend(request):
    reason = available_backends()[request.param]
    if reason is not None:
        pytest.skip(reason)
    return get_backend(request.param)


def run(benchmark, backend, group, fn, *args):
    """Warm up (compiles JIT kernels), then time ``fn(*args)`` with the device synchronized."""
    fn(*args)
    backend.synchronize()
    benchmark.group = group
    benchmark.extra_info["backend"] = backend.name

    def call():
        out = fn(*args)
        backend.synchronize()
        return out
    benchmark(call)


@pytest.fixture(params=list(SHAPES))
def case(request, backend):
    shape, out_ch, kernel, stride, pad, pool = SHAPES[request.param]
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    oh, ow = conv_output_size(h, kernel[0], stride[0], pad[0]), conv_output_size(w, kernel[1], stride[1], pad[1])
    a = backend.asarray
    data = {
        "name": request.param, "shape": shape, "kernel": kernel, "stride": stride, "pad": pad,
        "x": a(rng.standard_normal(shape)),
        # the patch matrix in the column-major layout im2col returns and Conv2D's backward produces
        "col": a(rng.standard_normal((c * kernel[0] * kernel[1], n * oh * ow))).T,
        "w": a(rng.standard_normal((c * kernel[0] * kernel[1], out_ch))),
        "act": a(rng.standard_normal((n, out_ch, oh, ow))),
        "pooled_shape": (n, out_ch, oh // pool, ow // pool), "pool": pool,
        "logits": a(rng.standard_normal((n, 10))), "labels": a(rng.integers(0, 10, n)),
        "param": a(rng.standard_normal(out_ch * c * kernel[0] * kernel[1] * 100)),
    }
    return data


def test_im2col(benchmark, backend, case):
    run(benchmark, backend, f"im2col {case['name']}", backend.im2col, case["x"], case["kernel"],
        case["stride"], case["pad"])


def test_col2im(benchmark, backend, case):
    run(benchmark, backend, f"col2im {case['name']}", backend.col2im, case["col"], case["shape"],
        case["kernel"], case["stride"], case["pad"])


def test_matmul(benchmark, backend, case):
    run(benchmark, backend, f"matmul {case['name']}", backend.matmul, case["col"], case["w"])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation(benchmark, backend, case, name):
    run(benchmark, backend, f"{name} {case['name']}", getattr(backend, name), case["act"])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_backward(benchmark, backend, case, name):
    y = getattr(backend, name)(case["act"])
    run(benchmark, backend, f"{name}_backward {case['name']}", getattr(backend, name + "_backward"),
        case["act"], y)


def test_add_bias(benchmark, backend, case):
    y, b = case["act"].copy(), case["act"][0, :, 0, 0].copy()
    run(benchmark, backend, f"add_bias {case['name']}", backend.add_bias, y, b)


def test_bias_grad(benchmark, backend, case):
    db = backend.zeros(case["act"].shape[1])
    run(benchmark, backend, f"bias_grad {case['name']}", backend.bias_grad, case["act"], db)


def test_maxpool2d(benchmark, backend, case):
    k = (case["pool"],) * 2
    run(benchmark, backend, f"maxpool2d {case['name']}", backend.maxpool2d, case["act"], k, k, (0, 0))


def test_maxpool2d_backward(benchmark, backend, case):
    k = (case["pool"],) * 2
    out, argmax = backend.maxpool2d(case["act"], k, k, (0, 0))
    run(benchmark, backend, f"maxpool2d_backward {case['name']}", backend.maxpool2d_backward, out, argmax,
        case["act"].shape, k, k, (0, 0))


def test_maxpool2d_relu(benchmark, backend, case):
    """Pooling of a ReLU's output as training runs it (the pair folded: ReLU on the pooled values)."""
    k = (case["pool"],) * 2
    run(benchmark, backend, f"maxpool2d_relu {case['name']}", backend.maxpool2d_relu, case["act"], k, k, (0, 0))


def test_maxpool2d_relu_backward(benchmark, backend, case):
    k = (case["pool"],) * 2
    out, argmax = backend.maxpool2d_relu(case["act"], k, k, (0, 0))
    run(benchmark, backend, f"maxpool2d_relu_backward {case['name']}", backend.maxpool2d_relu_backward, out, out,
        argmax, case["act"].shape, k, k, (0, 0))


def test_softmax_cross_entropy(benchmark, backend, case):
    run(benchmark, backend, f"softmax_cross_entropy {case['name']}", backend.softmax_cross_entropy,
        case["logits"], case["labels"])


def test_adam_update(benchmark, backend, case):
    p = case["param"]
    g, m, v = p.copy(), backend.xp.zeros_like(p), backend.xp.zeros_like(p)
    lr_t, eps_t = adam_scalars(1e-3, 0.9, 0.999, 1e-8, 1)
    run(benchmark, backend, f"adam_update {case['name']} ({p.size:,} params)", backend.adam_update,
        p, g, m, v, lr_t, 0.9, 0.999, eps_t)
