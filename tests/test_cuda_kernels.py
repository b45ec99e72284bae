"""The CUDA kernels (kernels/cuda/*.cu through backprop.kernels.cuda) against the NumPy reference.

Every parity test runs the same kernel code on two kinds of runner:
  * ``cpu-harness``: the .cu sources compiled by g++ (tests/cuda_harness), each launch run thread by
    thread on a deliberately small grid (2 blocks of 32 threads), so that the grid-stride loops
    wrap many times. It runs everywhere g++ is installed, CI included.
  * ``gpu`` and ``gpu-2-blocks`` (mark ``gpu``): the sources compiled by NVRTC and run on a CUDA
    device by CuPy, with the default grid and with a 2-block grid; skipped without a working GPU.
Inputs are random, in float32 and float64, on awkward shapes: batch 1, odd sizes, stride 2, stride
larger than the kernel, padding, non-square kernels, a kernel as large as the image.

Then, on the harness only, probes of single elements of arrays of more than 2^31 elements (mapped
lazily, so they cost almost no memory) check the 64-bit index arithmetic; and the whole harness
suite runs once more under AddressSanitizer and UBSan. On a GPU only: every kernel compiles for both
dtypes, and the kernels give the reference's answers on sizes larger than one full grid.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop.backends import available_backends
from backprop.kernels import cuda
from backprop.kernels import reference as ref
from backprop.kernels.reference import conv_output_size
from cuda_harness import harness

SANITIZE_ENV = harness.SANITIZE_ENV
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]

# (N, C, H, W), kernel, stride, pad
CONV_CASES = [
    ((1, 1, 5, 5), (3, 3), (1, 1), (0, 0)),  # batch 1
    ((2, 3, 7, 6), (3, 2), (2, 2), (1, 1)),  # non-square kernel, stride 2, padding
    ((3, 2, 9, 8), (2, 3), (1, 2), (0, 1)),
    ((1, 4, 6, 7), (1, 1), (3, 2), (0, 0)),  # stride > kernel
    ((2, 2, 11, 13), (2, 2), (3, 3), (1, 1)),  # stride > kernel, with padding
    ((2, 1, 5, 4), (5, 4), (1, 1), (2, 1)),  # kernel as large as the image
    ((1, 3, 1, 1), (3, 3), (1, 1), (1, 1)),  # a 1x1 image, everything else is padding
    ((5, 3, 12, 10), (3, 3), (1, 1), (1, 1)),  # thousands of elements per thread of the test grid
]
POOL_CASES = [
    ((1, 1, 4, 4), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 7, 5), (3, 3), (2, 2), (1, 1)),  # overlapping windows, padding
    ((3, 2, 6, 9), (2, 3), (1, 2), (1, 0)),
    ((1, 2, 7, 7), (2, 2), (3, 3), (0, 0)),  # stride > kernel: inputs no window covers
    ((2, 3, 9, 11), (3, 3), (1, 1), (1, 1)),  # each input in up to 9 windows
]


def tolerance(dtype):
    return {"rtol": 2e-6, "atol": 1e-6} if np.dtype(dtype) == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


# -- runners ------------------------------------------------------------------------------------------

def gpu_runner(max_blocks=None):
    reason = available_backends()["cupy"]
    if reason is not None:
        pytest.skip(f"no usable CUDA device: {reason}")
    return cuda.CupyRunner(max_blocks=max_blocks)


# The GPU runners where a GPU runs CuPy; elsewhere the CPU harness alone (as the emulated device stands
# in for "cupy" in conftest's backend fixtures).
GPU_RUNNERS = [pytest.param("gpu", marks=pytest.mark.gpu), pytest.param("gpu-2-blocks", marks=pytest.mark.gpu)]


@pytest.fixture(params=["cpu-harness", *(GPU_RUNNERS if available_backends()["cupy"] is None else [])])
def runner(request):
    if request.param == "cpu-harness":
        return harness.HarnessRunner(request.getfixturevalue("harness_lib"), grid=2, block=32)
    return gpu_runner(max_blocks=2 if request.param == "gpu-2-blocks" else None)


def dev(runner, a):
    """A copy of host array ``a`` on the runner's device (a copy on the CPU too: the optimizer
    updates work in place, and must not update the reference's arrays)."""
    return runner.xp.array(a, copy=True)


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


# -- parity with the reference ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kernel,stride,pad", CONV_CASES)
def test_im2col(runner, rng, dtype, shape, kernel, stride, pad):
    x = rng.standard_normal(shape).astype(dtype)
    expected = ref.im2col(np, x, kernel, stride, pad)
    col = cuda.im2col(dev(runner, x), kernel, stride, pad, runner=runner)
    assert col.dtype == dtype and col.flags.f_contiguous  # every (c, ky, kx) column contiguous
    np.testing.assert_array_equal(host(col), expected)
    row_major = runner.xp.full(expected.shape, np.nan, dtype=dtype)
    assert cuda.im2col(dev(runner, x), kernel, stride, pad, out=row_major, runner=runner) is row_major
    np.testing.assert_array_equal(host(row_major), expected)


def test_im2col_and_col2im_take_an_empty_batch(runner):
    """An empty batch's patch matrix is (0, C*KH*KW), whose default layout has a zero stride: im2col
    refused it ("no broadcast views"), so conv2d failed on an empty batch on CuPy."""
    x = np.zeros((0, 3, 5, 5), np.float32)
    col = cuda.im2col(dev(runner, x), (3, 3), (1, 1), (1, 1), runner=runner)
    assert col.shape == (0, 27)
    assert cuda.col2im(col, x.shape, (3, 3), (1, 1), (1, 1), runner=runner).shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kernel,stride,pad", CONV_CASES)
def test_col2im(runner, rng, dtype, shape, kernel, stride, pad):
    n, ch, h, w = shape
    rows = n * conv_output_size(h, kernel[0], stride[0], pad[0]) * conv_output_size(w, kernel[1], stride[1], pad[1])
    c = rng.standard_normal((rows, ch * kernel[0] * kernel[1])).astype(dtype)
    expected = ref.col2im(np, c, shape, kernel, stride, pad)
    for layout in (c, np.asfortranarray(c)):  # row-major, and im2col's column-major layout
        img = cuda.col2im(dev(runner, layout), shape, kernel, stride, pad, runner=runner)
        assert img.shape == shape and img.dtype == dtype
        np.testing.assert_allclose(host(img), expected, **tolerance(dtype))
    strided = dev(runner, np.repeat(c, 2, axis=1))[:, ::2]  # a view with a column stride of 2
    np.testing.assert_allclose(host(cuda.col2im(strided, shape, kernel, stride, pad, runner=runner)), expected,
                               **tolerance(dtype))


def pool_input(rng, shape, dtype):
    """Random values with many ties (few distinct values), -inf next to the padding, and one NaN."""
    x = rng.integers(-3, 4, shape).astype(dtype)
    x[0, 0, 0, :2] = -np.inf
    x[-1, -1, -1, -1] = np.nan
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kernel,stride,pad", POOL_CASES)
def test_maxpool2d_and_backward(runner, rng, dtype, shape, kernel, stride, pad):
    x = pool_input(rng, shape, dtype)
    out_ref, arg_ref = ref.maxpool2d(np, x, kernel, stride, pad)
    out, arg = cuda.maxpool2d(dev(runner, x), kernel, stride, pad, runner=runner)
    assert out.dtype == dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(host(out), out_ref)  # NaN where the reference has NaN
    np.testing.assert_array_equal(host(arg), arg_ref)  # ties: the first offset, as the reference
    d = rng.standard_normal(out_ref.shape).astype(dtype)
    dx = cuda.maxpool2d_backward(dev(runner, d), arg, shape, kernel, stride, pad, runner=runner)
    np.testing.assert_allclose(host(dx), ref.maxpool2d_backward(np, d, arg_ref, shape, kernel, stride, pad),
                               **tolerance(dtype))


ELEMENTWISE = ["relu", "sigmoid", "tanh", "softmax"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 33), (70, 3)])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activations_and_gradients(runner, rng, dtype, shape, name):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.flat[0] = 0.0
    if name != "softmax":
        x.flat[-1] = 1000.0 if x.size > 1 else -1000.0  # sigmoid/tanh must not overflow
    y_ref = getattr(ref, name)(np, x)
    y = getattr(cuda, name)(dev(runner, x), runner=runner)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(host(y), y_ref, **tolerance(dtype))
    d = rng.standard_normal(shape).astype(dtype)
    dx = getattr(cuda, name + "_backward")(dev(runner, d), dev(runner, y_ref), runner=runner)
    np.testing.assert_allclose(host(dx), getattr(ref, name + "_backward")(np, d, y_ref), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_propagates_nan_as_the_reference(runner, dtype):
    x = np.array([np.nan, -1.0, 2.0, -np.inf, np.inf], dtype)
    np.testing.assert_array_equal(host(cuda.relu(dev(runner, x), runner=runner)), ref.relu(np, x))


@pytest.mark.gpu
def test_float32_subnormals_are_flushed_on_the_gpu():
    """CuPy compiles with -ftz=true (kernels/cuda.py says so): pin it, so a GPU run shows whether the
    docs still hold. float64 keeps its subnormals."""
    runner = gpu_runner()
    x = np.array([1e-40, 2.0], np.float32)
    np.testing.assert_array_equal(host(cuda.relu(dev(runner, x), runner=runner)), [0.0, 2.0])
    x64 = np.array([1e-310, 2.0])
    np.testing.assert_array_equal(host(cuda.relu(dev(runner, x64), runner=runner)), x64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 2), (5, 3), (33, 10), (70, 1), (4, 257)])
@pytest.mark.parametrize("labels", ["int64", "int32", "probabilities"])
def test_softmax_cross_entropy(runner, rng, dtype, n, k, labels):
    logits = (rng.standard_normal((n, k)) * 4).astype(dtype)
    logits[0, 0] = 80.0  # exp would overflow float32 without the shift
    target = rng.integers(0, k, n)
    if labels == "probabilities":
        target = rng.dirichlet(np.ones(k), n).astype(dtype)
    else:
        target = target.astype(labels)
    loss_ref, grad_ref = ref.softmax_cross_entropy(np, logits, target)
    loss, grad = cuda.softmax_cross_entropy(dev(runner, logits), dev(runner, target), runner=runner)
    assert loss.shape == () and loss.dtype == dtype and grad.dtype == dtype
    np.testing.assert_allclose(float(loss), float(loss_ref), **tolerance(dtype))
    np.testing.assert_allclose(host(grad), grad_ref, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [4, -1, 2**40])
def test_softmax_cross_entropy_makes_the_row_of_a_label_out_of_range_nan(runner, rng, dtype, bad):
    """As the reference: the row's loss (so the mean) and gradient are NaN, the other rows as usual,
    and the label is never read through (the sanitizer run would catch a read out of bounds)."""
    logits = rng.standard_normal((3, 4)).astype(dtype)
    labels = np.array([0, bad, 1])
    loss_ref, grad_ref = ref.softmax_cross_entropy(np, logits, labels)
    loss, grad = cuda.softmax_cross_entropy(dev(runner, logits), dev(runner, labels), runner=runner)
    assert np.isnan(float(loss)) and np.isnan(float(loss_ref))
    assert np.isnan(host(grad)[1]).all() and np.isfinite(host(grad)[[0, 2]]).all()
    np.testing.assert_allclose(host(grad), grad_ref, **tolerance(dtype))


OPTIMIZERS = {
    "sgd": (lambda shape: [], lambda xp, p, g, s: ref.sgd_update(xp, p, g, None, 0.1, 0.0, False),
            lambda p, g, s, run: cuda.sgd_update(p, g, None, 0.1, 0.0, False, runner=run)),
    "momentum": (lambda shape: ["v"], lambda xp, p, g, s: ref.sgd_update(xp, p, g, *s, 0.1, 0.9, False),
                 lambda p, g, s, run: cuda.sgd_update(p, g, *s, 0.1, 0.9, False, runner=run)),
    "nesterov": (lambda shape: ["v"], lambda xp, p, g, s: ref.sgd_update(xp, p, g, *s, 0.1, 0.9, True),
                 lambda p, g, s, run: cuda.sgd_update(p, g, *s, 0.1, 0.9, True, runner=run)),
    "adagrad": (lambda shape: ["sum_sq"], lambda xp, p, g, s: ref.adagrad_update(xp, p, g, *s, 0.1, 1e-10),
                lambda p, g, s, run: cuda.adagrad_update(p, g, *s, 0.1, 1e-10, runner=run)),
    "rmsprop": (lambda shape: ["mean_sq"], lambda xp, p, g, s: ref.rmsprop_update(xp, p, g, *s, 0.01, 0.99, 1e-8),
                lambda p, g, s, run: cuda.rmsprop_update(p, g, *s, 0.01, 0.99, 1e-8, runner=run)),
}


def adam_steps(step):
    lr_t, eps_t = ref.adam_scalars(1e-3, 0.9, 0.999, 1e-8, step)
    return ((lambda shape: ["m", "v"],
             lambda xp, p, g, s: ref.adam_update(xp, p, g, *s, lr_t, 0.9, 0.999, eps_t),
             lambda p, g, s, run: cuda.adam_update(p, g, *s, lr_t, 0.9, 0.999, eps_t, runner=run)))


OPTIMIZERS.update({f"adam-step-{i}": adam_steps(i) for i in (1, 2, 3)})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 3), (300,)])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_updates(runner, rng, dtype, shape, name):
    """Three updates in a row (the state carries over), parameters and state against the reference."""
    states, reference_update, cuda_update = OPTIMIZERS[name]
    p = rng.standard_normal(shape).astype(dtype)
    state = [np.abs(rng.standard_normal(shape)).astype(dtype) * 0.1 for _ in states(shape)]
    p_dev, state_dev = dev(runner, p), [dev(runner, s) for s in state]
    for _ in range(3):
        g = rng.standard_normal(shape).astype(dtype)
        reference_update(np, p, g, state)
        cuda_update(p_dev, dev(runner, g), state_dev, runner)
    np.testing.assert_allclose(host(p_dev), p, **tolerance(dtype))
    for s_dev, s in zip(state_dev, state, strict=True):
        np.testing.assert_allclose(host(s_dev), s, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["momentum", "nesterov", "rmsprop", "adam-step-3"])
def test_optimizer_updates_flush_subnormal_state_like_the_reference(runner, dtype, name):
    """Decaying state that falls below the smallest normal number is stored as zero, bit for bit as
    the reference stores it (a zero gradient, state on both sides of the boundary, NaN)."""
    states, reference_update, cuda_update = OPTIMIZERS[name]
    tiny = np.finfo(dtype).tiny
    values = np.array([tiny * 1.05, -tiny * 1.05, tiny * 2, tiny / 4, 0.0, np.nan, 1.0], dtype)
    p, g = np.ones_like(values), np.zeros_like(values)
    state = [values.copy() for _ in states(values.shape)]
    p_dev, state_dev = dev(runner, p), [dev(runner, s) for s in state]
    with np.errstate(invalid="ignore"):
        reference_update(np, p, g, state)
        cuda_update(p_dev, dev(runner, g), state_dev, runner)
    for s_dev, s in zip(state_dev, state, strict=True):
        assert not np.any((s != 0) & (np.abs(s) < tiny))  # the reference kept no subnormal
        np.testing.assert_array_equal(host(s_dev), s)
    np.testing.assert_array_equal(host(p_dev), p)


def test_in_place_updates_refuse_arrays_they_cannot_update(runner):
    p = dev(runner, np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.sgd_update(p.T, p, None, 0.1, 0.0, False, runner=runner)
    with pytest.raises(ValueError, match="float32"):
        cuda.adagrad_update(p, p, dev(runner, np.zeros((4, 4))), 0.1, 1e-8, runner=runner)
    x = dev(runner, np.zeros((1, 1, 3, 3), np.float32))
    broadcast = runner.xp.broadcast_to(runner.xp.zeros((1, 9), np.float32), (9, 9))
    with pytest.raises(ValueError, match="broadcast"):
        cuda.im2col(x, (3, 3), (1, 1), (1, 1), out=broadcast, runner=runner)


# -- the harness only: 64-bit index arithmetic, sanitizers ------------------------------------------------

BIG = 2**31  # element counts past this overflow 32-bit signed indices


def lazy(shape, dtype):
    try:
        return harness.lazy_zeros(shape, dtype)
    except (OSError, OverflowError, ValueError, AttributeError) as exc:
        pytest.skip(f"cannot map {math.prod(shape) * np.dtype(dtype).itemsize / 2**30:.0f} GiB of "
                    f"lazily allocated memory here: {exc}")


@pytest.fixture
def probe(harness_lib):
    """probe(threads, grid=None): a harness runner that runs only these global thread ids, on a grid
    of blocks of 256 threads (by default as many blocks as the elements need), with lazy arrays."""
    if harness.map_noreserve() is None:
        pytest.skip("no mmap MAP_NORESERVE flag known for this platform (lazily allocated huge arrays)")

    def make(threads, grid=None):
        return harness.HarnessRunner(harness_lib, grid=grid, block=256, xp=harness.lazy_array_module(),
                                     only_threads=list(threads))
    return make


CONV_BIG = ((1, 2, 40000, 30000), (2, 2), (1, 1), (1, 1))  # 2.4e9 input and 9.6e9 patch-matrix elements


def unravel(i, shape):
    return tuple(int(v) for v in np.unravel_index(i, shape))


def test_harness_im2col_past_2_31_elements(probe):
    shape, kernel, stride, pad = CONV_BIG
    n, c, h, w = shape
    oh, ow = (h + 2 * pad[0] - kernel[0]) // stride[0] + 1, (w + 2 * pad[1] - kernel[1]) // stride[1] + 1
    rows, cols = n * oh * ow, c * kernel[0] * kernel[1]
    assert n * c * h * w > BIG and rows * cols > 4 * BIG
    for layout in ("column-major", "row-major"):
        x = lazy(shape, np.float32)
        out = None if layout == "column-major" else lazy((rows, cols), np.float32)
        ids = [rows * cols - 1, BIG + 12345, 2 * BIG + 777, 7 * rows + 5 * ow + 3]
        expected = {}
        for j, i in enumerate(ids):
            # the thread for memory element i of the matrix: row r, column k
            r, k = (i % rows, i // rows) if layout == "column-major" else (i // cols, i % cols)
            img, oy, ox = unravel(r, (n, oh, ow))
            ch, ky, kx = unravel(k, (c, *kernel))
            y, xx = oy * stride[0] + ky - pad[0], ox * stride[1] + kx - pad[1]
            expected[r, k] = 0.0
            if 0 <= y < h and 0 <= xx < w:
                x[img, ch, y, xx] = expected[r, k] = 1.0 + j
        assert any(expected.values())
        col = cuda.im2col(x, kernel, stride, pad, out=out, runner=probe(ids))
        assert {rk: float(col[rk]) for rk in expected} == expected


def test_harness_col2im_past_2_31_elements(probe):
    shape, kernel, stride, pad = CONV_BIG
    n, c, h, w = shape
    oh, ow = h + 2 * pad[0] - kernel[0] + 1, w + 2 * pad[1] - kernel[1] + 1
    rows, cols = n * oh * ow, c * kernel[0] * kernel[1]
    col = lazy((cols, rows), np.float32).T  # im2col's layout
    ids = [n * c * h * w - 1, BIG + 4321, 3 * h * w // 2]
    expected = {}
    for j, i in enumerate(ids):
        img, ch, y, xx = unravel(i, shape)
        total = 0.0
        for ky in range(kernel[0]):
            for kx in range(kernel[1]):
                oy, ox = y + pad[0] - ky, xx + pad[1] - kx  # stride 1
                if 0 <= oy < oh and 0 <= ox < ow:
                    value = 10.0 * j + ky * kernel[1] + kx + 1
                    col[(img * oh + oy) * ow + ox, (ch * kernel[0] + ky) * kernel[1] + kx] = value
                    total += value
        expected[i] = total
    out = cuda.col2im(col, shape, kernel, stride, pad, runner=probe(ids)).reshape(-1)
    assert {i: float(out[i]) for i in ids} == expected


def test_harness_maxpool_past_2_31_elements(probe):
    shape, kernel, stride, pad = CONV_BIG
    n, c, h, w = shape
    oh, ow = h + 2 * pad[0] - kernel[0] + 1, w + 2 * pad[1] - kernel[1] + 1
    outputs = [n * c * oh * ow - 1, BIG + 99, BIG + 123_456_789]
    x = lazy(shape, np.float32)
    expected = {}
    for j, o in enumerate(outputs):
        plane, oy, ox = unravel(o, (n * c, oh, ow))
        for offset in (3, 2, 1, 0):  # the last window cell inside the image gets the maximum
            y, xx = oy - pad[0] + offset // kernel[1], ox - pad[1] + offset % kernel[1]
            if 0 <= y < h and 0 <= xx < w:
                x.reshape(n * c, h, w)[plane, y, xx] = 5.0 + j
                expected[o] = (5.0 + j, offset)
                break
    out, argmax = cuda.maxpool2d(x, kernel, stride, pad, runner=probe(outputs))
    out, argmax = out.reshape(-1), argmax.reshape(-1)
    assert {o: (float(out[o]), int(argmax[o])) for o in outputs} == expected

    # backward: input i is offset (0, 0) of window (y+1, x+1) and offset (1, 1) of window (y, x)
    dout, argmax = lazy((n, c, oh, ow), np.float32), lazy((n, c, oh, ow), np.int32)
    inputs = [n * c * h * w - 1, BIG + 7, BIG + 100_000_000 + 3 * w + 11]
    expected = {}
    for j, i in enumerate(inputs):
        plane, y, xx = unravel(i, (n * c, h, w))
        dout.reshape(n * c, oh, ow)[plane, y + 1, xx + 1] = 1.0 + j  # argmax 0 there (lazy zeros)
        dout.reshape(n * c, oh, ow)[plane, y, xx] = 100.0 * (j + 1)
        argmax.reshape(n * c, oh, ow)[plane, y, xx] = 3
        expected[i] = 1.0 + j + 100.0 * (j + 1)
    dx = cuda.maxpool2d_backward(dout, argmax, shape, kernel, stride, pad, runner=probe(inputs)).reshape(-1)
    assert {i: float(dx[i]) for i in inputs} == expected


ELEMENTWISE_BIG = {
    "relu": 1, "sigmoid": 1, "tanh": 1, "relu_backward": 2, "sigmoid_backward": 2, "tanh_backward": 2,
}


@pytest.mark.parametrize("name", [*ELEMENTWISE_BIG, *OPTIMIZERS])
def test_harness_elementwise_past_2_31_elements(probe, rng, name):
    """One thread of a grid of 2^30 threads visits elements t, t + 2^30 and t + 2^31 of arrays of
    2^31 + 100 elements: the grid-stride loop crosses 2^31."""
    size, thread = BIG + 100, 50
    visits = [thread, thread + 2**30, thread + BIG]
    run = probe([thread], grid=2**30 // 256)
    values = rng.standard_normal((4, len(visits))).astype(np.float32)
    values[2:] = np.abs(values[2:])  # optimizer states (sum of squares) are non-negative
    arrays = [lazy((size,), np.float32) for _ in range(4)]
    for a, v in zip(arrays, values, strict=True):
        a[visits] = v
    small = [v.copy() for v in values]
    if name in ELEMENTWISE_BIG:
        inputs = ELEMENTWISE_BIG[name]
        out = getattr(cuda, name)(*arrays[:inputs], runner=run)
        expected = getattr(ref, name)(np, *small[:inputs])
        got = out[visits]
    else:
        states, reference_update, cuda_update = OPTIMIZERS[name]
        k = len(states(None))
        cuda_update(arrays[0], arrays[1], arrays[2:2 + k], run)
        reference_update(np, small[0], small[1], small[2:2 + k])
        expected = np.stack([small[0], *small[2:2 + k]])  # the parameter and its state
        got = np.stack([a[visits] for a in [arrays[0], *arrays[2:2 + k]]])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["softmax", "softmax_backward", "softmax_cross_entropy_labels",
                                  "softmax_cross_entropy_probs"])
def test_harness_row_kernels_past_2_31_elements(probe, rng, name):
    """The last of 2^15 + 1 rows of 2^16 values starts at element 2^31 (float64: the kernels sum a
    row in order, NumPy pairwise, which in float32 differ by more than 1e-5 over 65536 values)."""
    rows, cols = 2**15 + 1, 2**16
    last = rows - 1
    run = probe([last])
    a, b = lazy((rows, cols), np.float64), lazy((rows, cols), np.float64)
    a[last] = rng.standard_normal(cols) * 3
    b[last] = rng.dirichlet(np.ones(cols)) if name == "softmax_cross_entropy_probs" else rng.standard_normal(cols)
    if name == "softmax":
        got, expected = cuda.softmax(a, runner=run)[last], ref.softmax(np, a[last:])[0]
    elif name == "softmax_backward":
        y = ref.softmax(np, a[last:])
        b2 = lazy((rows, cols), np.float64)
        b2[last] = y[0]
        got = cuda.softmax_backward(b, b2, runner=run)[last]
        expected = ref.softmax_backward(np, b[last:], y)[0]
    else:
        target = b
        if name == "softmax_cross_entropy_labels":
            target = lazy((rows,), np.int64)
            target[last] = cols - 3
        loss, grad = cuda.softmax_cross_entropy(a, target, runner=run)
        loss_ref, grad_ref = ref.softmax_cross_entropy(np, a[last:], target[last:])
        np.testing.assert_allclose(float(loss) * rows, float(loss_ref), rtol=1e-12)  # the other rows are 0
        got, expected = grad[last] * rows, grad_ref[0]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)


def test_harness_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    """Every harness test above once more, with the kernels built with -fsanitize=address,undefined:
    any read or write outside an array, or any signed overflow, fails."""
    if harness.gxx() is None:
        pytest.skip("g++ not found: the CPU harness compiles the CUDA kernels with it")
    libasan = subprocess.run([harness.gxx(), "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip("libasan (gcc's AddressSanitizer runtime) is not installed")
    env = {**os.environ, SANITIZE_ENV: "1", "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0",
           "UBSAN_OPTIONS": "print_stacktrace=1"}
    root = Path(__file__).resolve().parents[1]
    # -s: the sanitizers report on stderr and exit at once, before pytest would print what it captured
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-x", "-p", "no:cacheprovider",
                             f"--rootdir={root}", __file__, "-k", "harness and not sanitizers"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"the harness tests failed under the sanitizers (exit code {result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-8000:]}", pytrace=False)
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]


# -- a GPU only ------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_compiles(dtype):
    gpu_runner()
    kernels = cuda.compiled_kernels(dtype)
    assert sorted(kernels) == sorted(cuda.KERNELS)
    for function in kernels.values():  # loaded on the device, and launchable with our block size
        assert function.max_threads_per_block >= cuda.CupyRunner.block


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_sizes_larger_than_one_grid(rng, dtype):
    """With the default grid, sizes over grid_limit() * block threads make every thread loop."""
    run = gpu_runner()
    threads = run.grid_limit() * run.block
    per_image = 32 * 32 * 27  # patch-matrix elements of one (3, 32, 32) image, 3x3 kernel, padding 1
    x = rng.standard_normal((2 * threads // per_image + 3, 3, 32, 32)).astype(dtype)
    col = cuda.im2col(dev(run, x), (3, 3), (1, 1), (1, 1), runner=run)
    assert col.size > 2 * threads
    np.testing.assert_array_equal(host(col), ref.im2col(np, x, (3, 3), (1, 1), (1, 1)))
    d = rng.standard_normal(col.shape).astype(dtype)
    np.testing.assert_allclose(host(cuda.col2im(dev(run, d), x.shape, (3, 3), (1, 1), (1, 1), runner=run)),
                               ref.col2im(np, d, x.shape, (3, 3), (1, 1), (1, 1)), **tolerance(dtype))

    big = rng.standard_normal((2 * threads // (3 * 32 * 32) + 3, 3, 32, 32)).astype(dtype)
    out, arg = cuda.maxpool2d(dev(run, big), (2, 2), (1, 1), (1, 1), runner=run)
    assert out.size > 2 * threads
    out_ref, arg_ref = ref.maxpool2d(np, big, (2, 2), (1, 1), (1, 1))
    np.testing.assert_array_equal(host(out), out_ref)
    np.testing.assert_array_equal(host(arg), arg_ref)
    dout = rng.standard_normal(out_ref.shape).astype(dtype)
    np.testing.assert_allclose(
        host(cuda.maxpool2d_backward(dev(run, dout), arg, big.shape, (2, 2), (1, 1), (1, 1), runner=run)),
        ref.maxpool2d_backward(np, dout, arg_ref, big.shape, (2, 2), (1, 1), (1, 1)), **tolerance(dtype))

    rows = rng.standard_normal((threads + 1000, 3)).astype(dtype)  # one thread per row
    np.testing.assert_allclose(host(cuda.softmax(dev(run, rows), runner=run)), ref.softmax(np, rows),
                               **tolerance(dtype))
    labels = rng.integers(0, 3, len(rows))
    loss, grad = cuda.softmax_cross_entropy(dev(run, rows), dev(run, labels), runner=run)
    loss_ref, grad_ref = ref.softmax_cross_entropy(np, rows, labels)
    np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(host(grad), grad_ref, **tolerance(dtype))

    p, g = rng.standard_normal((2, 2 * threads + 7)).astype(dtype)
    np.testing.assert_allclose(host(cuda.relu(dev(run, p), runner=run)), ref.relu(np, p))
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_dev, m_dev, v_dev = dev(run, p), dev(run, m), dev(run, v)
    lr_t, eps_t = ref.adam_scalars(1e-3, 0.9, 0.999, 1e-8, 1)
    cuda.adam_update(p_dev, dev(run, g), m_dev, v_dev, lr_t, 0.9, 0.999, eps_t, runner=run)
    ref.adam_update(np, p, g, m, v, lr_t, 0.9, 0.999, eps_t)
    np.testing.assert_allclose(host(p_dev), p, **tolerance(dtype))
    np.testing.assert_allclose(host(v_dev), v, **tolerance(dtype))
