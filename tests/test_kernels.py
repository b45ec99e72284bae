"""Every kernel of every backend against an independent loop-by-loop oracle, and against the NumPy
reference on larger random inputs (parity), on awkward shapes: batch 1, odd sizes, stride 2 and
stride > kernel, padding, non-square kernels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backprop.backends import get_backend
from backprop.kernels.reference import adam_scalars, conv_output_size
from conftest import overrides, overriding

# (N, C, H, W), kernel, stride, pad
CONV_CASES = [
    ((1, 1, 5, 5), (3, 3), (1, 1), (0, 0)),
    ((2, 3, 7, 6), (3, 2), (2, 2), (1, 1)),
    ((3, 2, 9, 8), (2, 3), (1, 2), (0, 1)),
    ((1, 4, 6, 7), (1, 1), (3, 2), (0, 0)),  # stride > kernel
    ((2, 1, 5, 4), (5, 4), (1, 1), (2, 1)),  # kernel as large as the image
]
POOL_CASES = [
    ((1, 1, 4, 4), (2, 2), (2, 2), (0, 0)),
    ((2, 3, 7, 5), (3, 3), (2, 2), (1, 1)),  # stride != kernel, padding
    ((3, 2, 6, 9), (2, 3), (1, 2), (1, 0)),
    ((1, 2, 7, 7), (2, 2), (3, 3), (0, 0)),  # stride > kernel
]


def padded(x, pad, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2), constant_values=value)


def im2col_oracle(x, kernel, stride, pad):
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel[0], stride[0], pad[0])
    ow = conv_output_size(w, kernel[1], stride[1], pad[1])
    xp_ = padded(x, pad)
    rows = []
    for i, oy, ox in itertools.product(range(n), range(oh), range(ow)):
        y0, x0 = oy * stride[0], ox * stride[1]
        rows.append(xp_[i, :, y0:y0 + kernel[0], x0:x0 + kernel[1]].reshape(-1))
    return np.array(rows)


def maxpool_oracle(x, dout, kernel, stride, pad):
    """Forward max (padding -inf) and backward routing to the first max of each window."""
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel[0], stride[0], pad[0])
    ow = conv_output_size(w, kernel[1], stride[1], pad[1])
    xp_ = padded(x, pad, -np.inf)
    out = np.empty((n, c, oh, ow), x.dtype)
    dx = np.zeros(xp_.shape, np.float64)
    for i, ch, oy, ox in itertools.product(range(n), range(c), range(oh), range(ow)):
        y0, x0 = oy * stride[0], ox * stride[1]
        win = xp_[i, ch, y0:y0 + kernel[0], x0:x0 + kernel[1]]
        k = int(np.argmax(win))
        out[i, ch, oy, ox] = win.flat[k]
        dx[i, ch, y0 + k // kernel[1], x0 + k % kernel[1]] += dout[i, ch, oy, ox]
    return out, dx[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w]


def adam_args(lr, beta1, beta2, eps, step):
    """adam_update's step arguments (lr_t, beta1, beta2, eps_t) for Adam's usual ones at ``step``."""
    lr_t, eps_t = adam_scalars(lr, beta1, beta2, eps, step)
    return lr_t, beta1, beta2, eps_t


def host(backend, a):
    return backend.to_numpy(a)


@pytest.mark.parametrize("shape,kernel,stride,pad", CONV_CASES)
def test_im2col_matches_oracle(backend64, rng, shape, kernel, stride, pad):
    x = rng.standard_normal(shape)
    col = backend64.im2col(backend64.asarray(x), kernel, stride, pad)
    np.testing.assert_array_equal(host(backend64, col), im2col_oracle(x, kernel, stride, pad))


@pytest.mark.parametrize("shape,kernel,stride,pad", CONV_CASES)
def test_col2im_is_adjoint_of_im2col(backend64, rng, shape, kernel, stride, pad):
    """<im2col(x), c> == <x, col2im(c)> for random x and c."""
    x = rng.standard_normal(shape)
    c = rng.standard_normal(im2col_oracle(x, kernel, stride, pad).shape)
    col = host(backend64, backend64.im2col(backend64.asarray(x), kernel, stride, pad))
    img = host(backend64, backend64.col2im(backend64.asarray(c), shape, kernel, stride, pad))
    assert img.shape == shape
    np.testing.assert_allclose((col * c).sum(), (x * img).sum(), rtol=1e-12)


@pytest.mark.parametrize("shape,kernel,stride,pad", POOL_CASES)
def test_maxpool_matches_oracle(backend64, rng, shape, kernel, stride, pad):
    x = rng.standard_normal(shape)
    x[0, 0, 0, :2] = -5.0  # a tie, and values below 0 next to the padding
    oh = conv_output_size(shape[2], kernel[0], stride[0], pad[0])
    ow = conv_output_size(shape[3], kernel[1], stride[1], pad[1])
    dout = rng.standard_normal((shape[0], shape[1], oh, ow))
    out_ref, dx_ref = maxpool_oracle(x, dout, kernel, stride, pad)
    out, argmax = backend64.maxpool2d(backend64.asarray(x), kernel, stride, pad)
    np.testing.assert_array_equal(host(backend64, out), out_ref)
    dx = backend64.maxpool2d_backward(backend64.asarray(dout), argmax, shape, kernel, stride, pad)
    np.testing.assert_allclose(host(backend64, dx), dx_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, pad", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)),
                                                 ((2, 2), (3, 3), (0, 0))])
def test_maxpool_backward_gives_an_inf_or_nan_gradient_to_the_winner_only(backend, rng, kernel, stride, pad):
    """Routing is a select: the cells that lost their window get 0, never inf * 0 = NaN (as in PyTorch)."""
    x = rng.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7).astype(np.float32)  # distinct: no ties
    out, argmax = backend.maxpool2d(backend.asarray(x), kernel, stride, pad)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dout[0, 0, 0, 0], dout[1, 2, 1, 1], dout[0, 1, -1, -1] = np.inf, np.nan, -np.inf
    dx = backend.maxpool2d_backward(backend.asarray(dout), argmax, x.shape, kernel, stride, pad)
    expected = maxpool_oracle(x, dout, kernel, stride, pad)[1]  # (sums overlaps in float64)
    np.testing.assert_allclose(host(backend, dx), expected, rtol=1e-6, atol=0)  # NaN, inf must match exactly


def test_maxpool_of_an_empty_batch(backend):
    x = backend.asarray(np.zeros((0, 2, 5, 5), np.float32))
    out, argmax = backend.maxpool2d(x, (3, 3), (2, 2), (1, 1))
    dx = backend.maxpool2d_backward(out, argmax, x.shape, (3, 3), (2, 2), (1, 1))
    assert out.shape == (0, 2, 3, 3) and dx.shape == (0, 2, 5, 5)


def test_maxpool_pads_with_minus_infinity(backend):
    """An all-negative image must never pool to the padding's value."""
    x = backend.asarray(-np.ones((1, 1, 2, 2), np.float32))
    out, _ = backend.maxpool2d(x, (2, 2), (1, 1), (1, 1))
    np.testing.assert_array_equal(host(backend, out), -np.ones((1, 1, 3, 3)))


def test_maxpool_tie_sends_gradient_to_one_input(backend):
    x = backend.asarray(np.ones((1, 1, 2, 2), np.float32))
    out, argmax = backend.maxpool2d(x, (2, 2), (2, 2), (0, 0))
    dx = backend.maxpool2d_backward(backend.asarray(np.ones((1, 1, 1, 1), np.float32)), argmax,
                                    (1, 1, 2, 2), (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(host(backend, dx), [[[[1, 0], [0, 0]]]])


ACTIVATIONS = {
    "relu": (lambda x: np.maximum(x, 0), lambda d, x, y: d * (x > 0)),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda d, x, y: d * y * (1 - y)),
    "tanh": (np.tanh, lambda d, x, y: d * (1 - np.tanh(x) ** 2)),
    "softmax": (lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
                lambda d, x, y: np.einsum("ni,nij->nj", d, np.einsum("ni,ij->nij", y, np.eye(x.shape[1]))
                                          - np.einsum("ni,nj->nij", y, y))),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (16, 10)])
def test_activation_and_gradient_match_formula(backend64, rng, name, shape):
    f, df = ACTIVATIONS[name]
    x = rng.standard_normal(shape) * 3
    d = rng.standard_normal(shape)
    y = host(backend64, getattr(backend64, name)(backend64.asarray(x)))
    np.testing.assert_allclose(y, f(x), rtol=1e-12, atol=1e-15)
    dx = getattr(backend64, name + "_backward")(backend64.asarray(d), backend64.asarray(y))
    np.testing.assert_allclose(host(backend64, dx), df(d, x, y), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softmax"])
def test_activations_do_not_overflow(backend, name):
    x = backend.asarray(np.array([[-1000.0, 0.0, 1000.0]], np.float32))
    y = host(backend, getattr(backend, name)(x))
    assert y.dtype == np.float32 and np.isfinite(y).all()


def sce_oracle(logits, target):
    z = logits.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    onehot = np.eye(z.shape[1])[target] if target.ndim == 1 else target
    return -(onehot * logp).sum() / len(z), (np.exp(logp) - onehot) / len(z)


@pytest.mark.parametrize("n,k", [(1, 2), (5, 3), (33, 10)])
@pytest.mark.parametrize("labels", ["int", "onehot"])
def test_softmax_cross_entropy_matches_formula(backend64, rng, n, k, labels):
    logits = rng.standard_normal((n, k)) * 4
    target = rng.integers(0, k, n)
    if labels == "onehot":
        target = np.eye(k)[target]
    loss, grad = backend64.softmax_cross_entropy(backend64.asarray(logits), backend64.asarray(target))
    loss_ref, grad_ref = sce_oracle(logits, target)
    assert float(loss) == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(host(backend64, grad), grad_ref, rtol=1e-10, atol=1e-15)


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend):
    logits = backend.asarray(np.array([[1e4, 0.0, -1e4], [0.0, 3e4, 0.0]], np.float32))
    loss, grad = backend.softmax_cross_entropy(logits, backend.asarray(np.array([2, 1])))
    assert float(loss) == pytest.approx(2e4 / 2, rel=1e-6)
    assert np.isfinite(host(backend, grad)).all() and host(backend, grad).dtype == np.float32


def test_matmul_matches_numpy(backend64, rng):
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(host(backend64, backend64.matmul(backend64.asarray(a), backend64.asarray(b))),
                               a @ b, rtol=1e-12)


def test_kernels_keep_float32(backend, rng):
    x = backend.asarray(rng.standard_normal((2, 3, 6, 6)))
    assert x.dtype == np.float32
    col = backend.im2col(x, (3, 3), (1, 1), (1, 1))
    outputs = [col, backend.col2im(col, x.shape, (3, 3), (1, 1), (1, 1)),
               *backend.maxpool2d(x, (2, 2), (2, 2), (0, 0))[:1], backend.relu(x), backend.sigmoid(x),
               backend.tanh(x), backend.softmax(x)]
    assert all(o.dtype == np.float32 for o in outputs)


# -- parity of each non-reference backend with the NumPy reference, at realistic sizes -------------

@pytest.mark.parametrize("accel_backend", overriding("im2col", "col2im"), indirect=True)
def test_conv_kernels_parity_with_reference(accel_backend, rng):
    ref = get_backend("numpy")
    for shape, kernel, stride, pad in [((100, 1, 28, 28), (5, 5), (1, 1), (0, 0)),
                                       ((64, 3, 32, 32), (3, 3), (1, 1), (1, 1)), *CONV_CASES]:
        x = rng.standard_normal(shape).astype(np.float32)
        col = accel_backend.im2col(accel_backend.asarray(x), kernel, stride, pad)
        col_ref = ref.im2col(x, kernel, stride, pad)
        np.testing.assert_array_equal(host(accel_backend, col), col_ref)
        c = rng.standard_normal(col_ref.shape).astype(np.float32)
        np.testing.assert_allclose(host(accel_backend, accel_backend.col2im(accel_backend.asarray(c), shape,
                                                                            kernel, stride, pad)),
                                   ref.col2im(c, shape, kernel, stride, pad), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("accel_backend", overriding("maxpool2d", "maxpool2d_backward"), indirect=True)
def test_pool_kernels_parity_with_reference(accel_backend, rng):
    ref = get_backend("numpy")
    for shape, kernel, stride, pad in [((100, 30, 24, 24), (2, 2), (2, 2), (0, 0)), *POOL_CASES]:
        x = rng.standard_normal(shape).astype(np.float32)
        out, arg = accel_backend.maxpool2d(accel_backend.asarray(x), kernel, stride, pad)
        out_ref, arg_ref = ref.maxpool2d(x, kernel, stride, pad)
        np.testing.assert_array_equal(host(accel_backend, out), out_ref)
        d = rng.standard_normal(out_ref.shape).astype(np.float32)
        dx = accel_backend.maxpool2d_backward(accel_backend.asarray(d), arg, shape, kernel, stride, pad)
        np.testing.assert_allclose(host(accel_backend, dx),
                                   ref.maxpool2d_backward(d, arg_ref, shape, kernel, stride, pad), rtol=1e-6)


# -- parity on shapes drawn by hypothesis: every awkward combination, both dtypes --------------------

@st.composite
def window_cases(draw, pool=False):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph = draw(st.integers(0, kh // 2 if pool else 2))
    pw = draw(st.integers(0, kw // 2 if pool else 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    stride = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))  # stride > kernel included
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return shape, (kh, kw), stride, (ph, pw), dtype, draw(st.integers(0, 2**31))


PARITY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("accel_backend", overriding("im2col", "col2im"), indirect=True)
@PARITY
@given(case=window_cases())
def test_conv_kernels_parity_hypothesis(accel_backend, case):
    shape, kernel, stride, pad, dtype, seed = case
    b, ref = get_backend(accel_backend, dtype), get_backend("numpy", dtype)
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    col_ref = ref.im2col(x, kernel, stride, pad)
    np.testing.assert_array_equal(host(b, b.im2col(b.asarray(x), kernel, stride, pad)), col_ref)
    c = np.random.default_rng(seed + 1).standard_normal(col_ref.shape).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host(b, b.col2im(b.asarray(c), shape, kernel, stride, pad)),
                               ref.col2im(c, shape, kernel, stride, pad), rtol=tol, atol=tol)


@pytest.mark.parametrize("accel_backend", overriding("maxpool2d", "maxpool2d_backward"), indirect=True)
@PARITY
@given(case=window_cases(pool=True))
def test_pool_kernels_parity_hypothesis(accel_backend, case):
    shape, kernel, stride, pad, dtype, seed = case
    b, ref = get_backend(accel_backend, dtype), get_backend("numpy", dtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(dtype)  # small integers: plenty of ties
    out_ref, arg_ref = ref.maxpool2d(x, kernel, stride, pad)
    out, arg = b.maxpool2d(b.asarray(x), kernel, stride, pad)
    np.testing.assert_array_equal(host(b, out), out_ref)
    d = rng.standard_normal(out_ref.shape).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host(b, b.maxpool2d_backward(b.asarray(d), arg, shape, kernel, stride, pad)),
                               ref.maxpool2d_backward(d, arg_ref, shape, kernel, stride, pad), rtol=tol, atol=tol)


@st.composite
def pool_2x2_cases(draw):
    """The common pooling window (2x2, stride 2, no padding) on odd and even sizes, with NaN and
    infinities placed anywhere: backends may have a dedicated kernel for exactly this window."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 9)), draw(st.integers(2, 9)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    specials = draw(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([np.nan, np.inf, -np.inf])),
                             max_size=4))
    return shape, dtype, specials, draw(st.integers(0, 2**31))


@pytest.mark.parametrize("accel_backend", overriding("maxpool2d", "maxpool2d_backward", "maxpool2d_relu_backward"),
                         indirect=True)
@PARITY
@given(case=pool_2x2_cases())
def test_pool_2x2_parity_hypothesis(accel_backend, case):
    shape, dtype, specials, seed = case
    b, ref = get_backend(accel_backend, dtype), get_backend("numpy", dtype)
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(dtype)  # ties
    for where, value in specials:
        x.flat[where % x.size] = value
    win = ((2, 2), (2, 2), (0, 0))
    with np.errstate(invalid="ignore"):
        out_ref, arg_ref = ref.maxpool2d(x, *win)
        out, arg = b.maxpool2d(b.asarray(x), *win)
    np.testing.assert_array_equal(host(b, out), out_ref)  # NaN where the reference has NaN
    np.testing.assert_array_equal(host(b, arg), arg_ref)
    d = rng.standard_normal(out_ref.shape).astype(dtype)
    np.testing.assert_array_equal(host(b, b.maxpool2d_backward(b.asarray(d), arg, shape, *win)),
                                  ref.maxpool2d_backward(d, arg_ref, shape, *win))
    with np.errstate(invalid="ignore"):
        through_relu = ref.maxpool2d_relu_backward(d, out_ref, arg_ref, shape, *win)
    np.testing.assert_array_equal(host(b, b.maxpool2d_relu_backward(b.asarray(d), out, arg, shape, *win)),
                                  through_relu)


@pytest.mark.parametrize("probabilities", [False, True])
def test_softmax_cross_entropy_counts_hits_like_argmax(backend, probabilities, rng):
    """The accuracy counted in the loss's own pass: 1 where argmax(logits) is the class, with NumPy's
    argmax (the first of equal logits; the first NaN), against labels or probability rows; the loss and
    gradient are those without hits."""
    logits = rng.integers(-2, 3, (40, 5)).astype(np.float32)  # ties
    logits[3, 2] = logits[7, 0] = logits[9, 4] = np.nan
    logits[11] = np.inf
    labels = rng.integers(0, 5, 40)
    target = np.eye(5, dtype=np.float32)[labels] if probabilities else labels
    if probabilities:
        target[0] = [0.25, 0.25, 0.5, 0.0, 0.0]
    hits = backend.zeros((40,))
    with np.errstate(invalid="ignore"):
        loss, grad = backend.softmax_cross_entropy(backend.asarray(logits), backend.asarray(target), hits)
        plain_loss, plain_grad = backend.softmax_cross_entropy(backend.asarray(logits), backend.asarray(target))
    want = (logits.argmax(axis=1) == (target.argmax(axis=1) if probabilities else labels)).astype(np.float32)
    np.testing.assert_array_equal(host(backend, hits), want)
    np.testing.assert_array_equal(host(backend, grad), host(backend, plain_grad))
    np.testing.assert_array_equal(host(backend, loss), host(backend, plain_loss))


@pytest.mark.parametrize("accel_backend", overriding("maxpool2d_relu", "maxpool2d_relu_backward"), indirect=True)
@pytest.mark.parametrize("window", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (0, 1))])
def test_relu_pooling_parity_with_special_values(accel_backend, window, rng):
    """ReLU then max-pooling in one pass (and its gradient) gives the reference's values and argmax,
    with NaN and infinities in the input and infinite gradients, which reach a winner whose output is 0
    as NaN, as the reference's multiplied mask does."""
    ref = get_backend("numpy")
    x = rng.integers(-3, 4, (2, 3, 7, 6)).astype(np.float32)
    x.flat[[0, 17, 40, 100]] = [np.nan, np.inf, -np.inf, -np.inf]
    with np.errstate(invalid="ignore"):
        out_ref, arg_ref = ref.maxpool2d_relu(x, *window)
        out, arg = accel_backend.maxpool2d_relu(accel_backend.asarray(x), *window)
        np.testing.assert_array_equal(host(accel_backend, out), out_ref)
        np.testing.assert_array_equal(host(accel_backend, arg), arg_ref)
        d = rng.standard_normal(out_ref.shape).astype(np.float32)
        d.flat[[1, 5, 9]] = [np.inf, -np.inf, np.nan]
        want = ref.maxpool2d_relu_backward(d, out_ref, arg_ref, x.shape, *window)
        got = accel_backend.maxpool2d_relu_backward(accel_backend.asarray(d), out, arg, x.shape, *window)
    np.testing.assert_array_equal(host(accel_backend, got), want)


@pytest.mark.parametrize("accel_backend", overriding("add_bias_relu", "relu_bias_grad"), indirect=True)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (100, 100), (3, 4, 5, 2), (0, 3)])
def test_bias_relu_kernels_parity(accel_backend, shape, rng):
    """The bias and the ReLU after it in one kernel each way: the reference's values (NaN propagating
    forward, the mask multiplying backward) and its per-channel sums."""
    ref = get_backend("numpy")
    y, bias = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    y.flat[:3] = [np.nan, -np.inf, np.inf][:y.size]
    mine, theirs = accel_backend.asarray(y.copy()), y.copy()
    accel_backend.add_bias_relu(mine, accel_backend.asarray(bias))
    ref.add_bias_relu(theirs, bias)
    np.testing.assert_array_equal(host(accel_backend, mine), theirs)
    dout = rng.standard_normal(shape).astype(np.float32)
    out_mine, out_ref = accel_backend.zeros((shape[1],)), np.zeros(shape[1], np.float32)
    with np.errstate(invalid="ignore"):
        dz = accel_backend.relu_bias_grad(accel_backend.asarray(dout), mine, out_mine)
        dz_ref = ref.relu_bias_grad(dout, theirs, out_ref)
    np.testing.assert_array_equal(host(accel_backend, dz), dz_ref)
    np.testing.assert_allclose(host(accel_backend, out_mine), out_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("accel_backend", overriding("add_bias", "bias_grad"), indirect=True)
@PARITY
@given(shape=st.sampled_from([(1, 1), (7, 3), (1, 5, 1, 1), (3, 4, 5, 2), (2, 30, 24, 24)]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_bias_kernels_parity_hypothesis(accel_backend, shape, dtype, seed):
    b, ref = get_backend(accel_backend, dtype), get_backend("numpy", dtype)
    rng = np.random.default_rng(seed)
    y, bias = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    mine, theirs = b.asarray(y.copy()), y.copy()
    b.add_bias(mine, b.asarray(bias))
    ref.add_bias(theirs, bias)
    np.testing.assert_array_equal(host(b, mine), theirs)
    db, db_ref = b.zeros(shape[1]), np.zeros(shape[1], dtype)
    b.bias_grad(b.asarray(y), db)
    ref.bias_grad(y, db_ref)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host(b, db), db_ref, rtol=tol, atol=tol * y[:, 0].size)


def test_bias_kernels_match_formula(backend64, rng):
    y, bias = rng.standard_normal((3, 4, 5)), rng.standard_normal(4)
    out = backend64.asarray(y.copy())
    backend64.add_bias(out, backend64.asarray(bias))
    np.testing.assert_allclose(host(backend64, out), y + bias[:, None], rtol=1e-15)
    db = backend64.zeros(4)
    backend64.bias_grad(backend64.asarray(y), db)
    np.testing.assert_allclose(host(backend64, db), y.sum(axis=(0, 2)), rtol=1e-12)


BAD_LABELS = [3, -1, -4, 2**40]  # K, a negative label that must not wrap around, and far out


@pytest.mark.parametrize("bad", BAD_LABELS)
def test_softmax_cross_entropy_makes_the_row_of_a_label_out_of_range_nan(backend, rng, bad):
    """The one label policy: a label outside [0, K) neither raises (kernels never read labels back to
    the host) nor wraps; its row's loss, so the mean, and its gradient row are NaN, and the other
    rows keep their gradient."""
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, bad, 2, 1])
    good = np.array([0, 0, 2, 1])
    loss, grad = backend.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels))
    _, grad_good = get_backend("numpy").softmax_cross_entropy(logits, good)
    grad = host(backend, grad)
    assert np.isnan(float(loss)) and np.isnan(grad[1]).all()
    rows = [0, 2, 3]
    np.testing.assert_allclose(grad[rows], grad_good[rows], rtol=1e-6, atol=1e-7)


class NoHostRead(np.ndarray):
    """Labels that fail a test when read back as Python values (on a GPU: a synchronization)."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("the kernel read labels back to the host")

    min = max = item = tolist = __int__ = __index__ = __float__ = __bool__ = __iter__ = _refuse


def test_softmax_cross_entropy_reads_no_label_back_to_the_host(backend):
    if backend.xp is not np:
        pytest.skip("host NumPy labels stand in for device labels on the CPU backends only")
    labels = np.array([0, 5, 1]).view(NoHostRead)
    loss, grad = backend.softmax_cross_entropy(np.zeros((3, 4), np.float32), labels)
    assert np.isnan(float(loss)) and np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()


@pytest.mark.parametrize("accel_backend", overriding("softmax_cross_entropy"), indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_labels_out_of_range_parity_with_reference(accel_backend, rng, dtype):
    b, ref = get_backend(accel_backend, dtype), get_backend("numpy", dtype)
    n, k = 33, 5
    logits = (rng.standard_normal((n, k)) * 4).astype(dtype)
    labels = rng.integers(0, k, n)
    labels[rng.choice(n, len(BAD_LABELS), replace=False)] = BAD_LABELS
    loss, grad = b.softmax_cross_entropy(b.asarray(logits), b.asarray(labels))
    loss_ref, grad_ref = ref.softmax_cross_entropy(logits, labels)
    assert np.isnan(float(loss)) and np.isnan(float(loss_ref))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host(b, grad), grad_ref, rtol=tol, atol=tol)  # NaN rows where the reference's


@pytest.mark.parametrize("accel_backend", overriding("relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh",
                                                     "tanh_backward", "softmax", "softmax_backward",
                                                     "softmax_cross_entropy"), indirect=True)
@PARITY
@given(n=st.integers(1, 40), k=st.integers(1, 12), onehot=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_elementwise_and_softmax_kernels_parity_hypothesis(accel_backend, n, k, onehot, dtype, seed):
    b, ref = get_backend(accel_backend, dtype), get_backend("numpy", dtype)
    rng = np.random.default_rng(seed)
    x, d = (rng.standard_normal((n, k)) * 5).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name in ("relu", "sigmoid", "tanh", "softmax"):
        y = ref_y = getattr(ref, name)(x)
        if overrides(b.name, name):
            np.testing.assert_allclose(host(b, getattr(b, name)(b.asarray(x))), ref_y, rtol=tol, atol=tol)
        if overrides(b.name, name + "_backward"):
            np.testing.assert_allclose(host(b, getattr(b, name + "_backward")(b.asarray(d), b.asarray(y))),
                                       getattr(ref, name + "_backward")(d, ref_y), rtol=tol, atol=tol)
    if not overrides(b.name, "softmax_cross_entropy"):
        return
    labels = rng.integers(0, k, n)
    target = np.eye(k, dtype=dtype)[labels] if onehot else labels
    loss, grad = b.softmax_cross_entropy(b.asarray(x), b.asarray(target))
    loss_ref, grad_ref = ref.softmax_cross_entropy(x, target)
    assert float(loss) == pytest.approx(float(loss_ref), rel=tol, abs=tol)
    np.testing.assert_allclose(host(b, grad), grad_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("accel_backend", overriding("sgd_update", "adagrad_update", "rmsprop_update", "adam_update"),
                         indirect=True)
@PARITY
@given(size=st.integers(1, 300), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_optimizer_update_kernels_parity_hypothesis(accel_backend, size, dtype, seed):
    b, ref = get_backend(accel_backend, dtype), get_backend("numpy", dtype)
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(size).astype(dtype) for _ in range(4)]
    start[2:] = [np.abs(a) + dtype(0.1) for a in start[2:]]  # running squares are positive
    g = rng.standard_normal(size).astype(dtype)
    updates = [("sgd_update", 2, (0.1, 0.0, False)), ("sgd_update", 3, (0.1, 0.9, True)),
               ("adagrad_update", 3, (0.1, 1e-10)), ("rmsprop_update", 3, (0.01, 0.9, 1e-8)),
               ("adam_update", 4, adam_args(1e-3, 0.9, 0.999, 1e-8, 3))]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for name, count, args in updates:
        mine = [b.asarray(a.copy()) for a in start[:count]]
        theirs = [a.copy() for a in start[:count]]
        if name == "sgd_update" and args[1] == 0.0:
            mine.insert(2, None)
            theirs.insert(2, None)
        mine[1] = b.asarray(g)
        theirs[1] = g
        getattr(b, name)(*mine, *args)
        getattr(ref, name)(*theirs, *args)
        for a, r in zip(mine, theirs, strict=True):
            if r is not None:
                np.testing.assert_allclose(host(b, a), r, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,decays,args", [
    ("sgd_update", [0.9], (0.1, 0.9, False)), ("sgd_update", [0.9], (0.1, 0.9, True)),
    ("rmsprop_update", [0.9], (0.01, 0.9, 1e-8)), ("adam_update", [0.9, 0.999], adam_args(1e-3, 0.9, 0.999, 1e-8, 3))])
def test_decaying_optimizer_state_never_turns_subnormal(backend, dtype, name, decays, args):
    """With a zero gradient the state only decays; a value that would fall below the dtype's smallest
    normal number is stored as zero instead (subnormals run 10-100x slower on x86), every other value
    is the plain decayed one, NaN stays NaN, and every backend stores the same bits."""
    b = get_backend(backend, dtype)
    tiny = np.finfo(dtype).tiny
    values = np.array([tiny * 1.05, -tiny * 1.05, tiny * 2, tiny / 4, 0.0, np.nan, 1.0], dtype)
    state = [b.asarray(values.copy()) for _ in decays]
    p = b.asarray(np.ones_like(values))
    with np.errstate(invalid="ignore"):
        getattr(b, name)(p, b.asarray(np.zeros_like(values)), *state, *args)
        for s, decay in zip(state, decays, strict=True):
            decayed = values * dtype(decay)
            expected = np.where(np.abs(decayed) < tiny, dtype(0), decayed)
            np.testing.assert_array_equal(host(b, s), expected)
            assert expected[3] == 0 and expected[2] != 0  # the cases straddle the boundary as intended


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activations_treat_nan_and_inf_like_the_reference(backend, name):
    ref = get_backend("numpy")
    x = np.array([np.nan, -np.inf, -1.0, 0.0, 2.0, np.inf], np.float32)
    d = np.array([1.0, np.nan, 1.0, np.nan, 1.0, 1.0], np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        y_ref = getattr(ref, name)(x)
        dx_ref = getattr(ref, name + "_backward")(d, y_ref)
        y = host(backend, getattr(backend, name)(backend.asarray(x)))
        dx = host(backend, getattr(backend, name + "_backward")(backend.asarray(d), backend.asarray(y_ref)))
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)  # NaN where the reference has NaN, and only there
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-6)


def test_float32_sigmoid_stays_accurate_down_to_the_end_of_the_normal_range(backend):
    """exp(x) is a normal float32 down to x = ln(2**-126) = -87.3365; below, a backend may flush the
    reference's subnormal results to 0 (an absolute error under 1.2e-38)."""
    ref = get_backend("numpy")
    normal = np.array([-87.33, -87.2, -87.05, -86.9, -80.0], np.float32)
    np.testing.assert_allclose(host(backend, backend.sigmoid(backend.asarray(normal))), ref.sigmoid(normal),
                               rtol=1e-6, atol=0)
    below = np.array([-87.5, -90.0, -104.0], np.float32)
    np.testing.assert_allclose(host(backend, backend.sigmoid(backend.asarray(below))), ref.sigmoid(below),
                               rtol=0, atol=np.finfo(np.float32).tiny)


def test_an_integer_target_of_rows_is_probabilities_on_every_backend(backend):
    """The reference tells labels from probabilities by the target's rank, not its dtype."""
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    one_hot = np.array([[0, 1, 0], [0, 0, 1]])
    loss_ref, grad_ref = get_backend("numpy").softmax_cross_entropy(logits, one_hot.astype(np.float32))
    loss, grad = backend.softmax_cross_entropy(backend.asarray(logits), backend.xp.asarray(one_hot))
    np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-6)
    np.testing.assert_allclose(host(backend, grad), grad_ref, rtol=1e-6, atol=1e-7)


def test_bias_kernels_refuse_shapes_that_do_not_fit(backend):
    y = backend.asarray(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError):
        backend.add_bias(y, backend.asarray(np.ones(4, np.float32)))
    with pytest.raises(ValueError):
        backend.bias_grad(y, backend.zeros(2))


def test_kernels_take_an_empty_batch(backend):
    y = backend.asarray(np.ones((0, 3, 4, 4), np.float32))
    backend.add_bias(y, backend.asarray(np.ones(3, np.float32)))
    db = backend.asarray(np.full(3, 7.0, np.float32))
    backend.bias_grad(y, db)
    np.testing.assert_array_equal(host(backend, db), np.zeros(3, np.float32))
    assert backend.relu(y).shape == (0, 3, 4, 4)
    assert backend.maxpool2d(y, (2, 2), (2, 2), (0, 0))[0].shape == (0, 3, 2, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_scalars_on_the_device_give_the_bits_of_numbers(backend, dtype, rng):
    """Optimizers pass the learning rate (and Adam's lr_t, eps_t) as 0-d arrays of the parameter's dtype
    on its backend, so that a CUDA graph reads the current ones; the result is that of passing numbers."""
    b = get_backend(backend, dtype)
    lr_t, beta1, beta2, eps_t = adam_args(1e-3, 0.9, 0.999, 1e-8, 3)
    calls = [("sgd_update", 0, lambda s: (None, s(0.1), 0.0, False)), ("sgd_update", 1, lambda s: (s(0.1), 0.9, True)),
             ("adagrad_update", 1, lambda s: (s(0.1), 1e-10)), ("rmsprop_update", 1, lambda s: (s(0.01), 0.9, 1e-8)),
             ("adam_update", 2, lambda s: (s(lr_t), beta1, beta2, s(eps_t)))]
    start = [rng.standard_normal(37).astype(dtype) for _ in range(4)]
    start[2:] = [np.abs(a) + dtype(0.1) for a in start[2:]]
    for name, states, args in calls:
        results = []
        for scalar in (float, lambda v: b.asarray(np.array(v, dtype))):
            arrays = [b.asarray(a.copy()) for a in start[:2 + states]]
            getattr(b, name)(*arrays, *args(scalar))
            results.append([host(b, a) for a in arrays])
        for by_number, by_array in zip(*results, strict=True):
            np.testing.assert_array_equal(by_array, by_number, err_msg=name)


@pytest.mark.parametrize("accel_backend", overriding("sgd_update", "adagrad_update", "rmsprop_update", "adam_update"),
                         indirect=True)
def test_optimizer_updates_broadcast_a_gradient_like_the_reference(accel_backend):
    """A gradient of shape (1,) broadcasts, as in the reference, instead of being read past its end."""
    ref = get_backend("numpy")
    p0, g = np.linspace(-1, 1, 5, dtype=np.float32), np.array([0.5], np.float32)
    updates = [("sgd_update", 1, (0.1, 0.9, False)), ("adagrad_update", 1, (0.1, 1e-8)),
               ("rmsprop_update", 1, (0.01, 0.9, 1e-8)), ("adam_update", 2, adam_args(1e-3, 0.9, 0.999, 1e-8, 2))]
    for name, count, args in updates:
        mine = [accel_backend.asarray(p0.copy()), accel_backend.asarray(g),
                *(accel_backend.asarray(np.ones(5, np.float32)) for _ in range(count))]
        theirs = [p0.copy(), g, *(np.ones(5, np.float32) for _ in range(count))]
        getattr(accel_backend, name)(*mine, *args)
        getattr(ref, name)(*theirs, *args)
        np.testing.assert_allclose(host(accel_backend, mine[0]), theirs[0], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("accel_backend", ["numba"], indirect=True)
def test_numba_elementwise_gradients_and_adam_are_bit_exact_in_float32(accel_backend, rng):
    """Same operations in the same order, all in float32: no float64 detour, no reordering."""
    ref = get_backend("numpy")
    d, y = rng.standard_normal(10_000).astype(np.float32), rng.random(10_000).astype(np.float32)
    for name in ("relu_backward", "sigmoid_backward", "tanh_backward"):
        np.testing.assert_array_equal(getattr(accel_backend, name)(d, y), getattr(ref, name)(d, y), err_msg=name)
    mine = [a.copy() for a in (d, y, y, y)]
    theirs = [a.copy() for a in (d, y, y, y)]
    accel_backend.adam_update(*mine, *adam_args(1e-3, 0.9, 0.999, 1e-8, 3))
    ref.adam_update(*theirs, *adam_args(1e-3, 0.9, 0.999, 1e-8, 3))
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel,stride,pad", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (0, 0)),
                                               ((2, 3), (1, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))])
def test_pooling_through_relu_is_the_two_steps_in_turn(backend64, rng, kernel, stride, pad):
    """maxpool2d_relu(x) == maxpool2d(relu(x)), and its gradient with maxpool2d_relu_backward ==
    relu_backward(maxpool2d_backward(...)): overlapping windows, padding, ties, zeros, -inf, and a NaN
    first in its windows (a NaN after a positive value is the one case where the fold differs: see
    Backend.maxpool2d_relu_backward)."""
    b = backend64
    host_x = rng.integers(-2, 3, (2, 3, 7, 8)).astype(np.float64)
    host_x[0, 0, 0, 0], host_x[1, 2, 3, 3], host_x[1, 1] = np.nan, -np.inf, -1.0  # a plane with no positive
    x = b.asarray(host_x)
    r = b.relu(x)
    y, arg = b.maxpool2d(r, kernel, stride, pad)
    d = b.asarray(rng.standard_normal(y.shape))
    chain = host(b, b.relu_backward(b.maxpool2d_backward(d, arg, x.shape, kernel, stride, pad), r))
    np.testing.assert_array_equal(host(b, b.maxpool2d_relu_backward(d, y, arg, x.shape, kernel, stride, pad)), chain)
    y_fold, arg_fold = b.maxpool2d_relu(x, kernel, stride, pad)
    np.testing.assert_array_equal(host(b, y_fold), host(b, y))
    np.testing.assert_array_equal(host(b, b.maxpool2d_relu_backward(d, y_fold, arg_fold, x.shape, kernel, stride,
                                                                    pad)), chain)


@pytest.mark.parametrize("accel_backend", ["numba"], indirect=True)
def test_numba_elementwise_kernels_refuse_arrays_of_two_shapes(accel_backend):
    """Numba reads past a shorter array instead of failing: the backend checks the shapes first."""
    with pytest.raises(ValueError, match="one shape"):
        accel_backend.relu_backward(np.ones((2, 3), np.float32), np.ones(3, np.float32))


def _bad_kernel_calls(b):
    """(kernel, arguments, error, message) of calls every backend must refuse before computing."""
    f = np.float32
    x = b.asarray(np.ones((2, 3, 6, 6), f))
    w, bias = b.asarray(np.ones((4, 3, 3, 3), f)), b.asarray(np.ones(4, f))
    out, cache = b.conv2d_forward(x, w, bias, (1, 1), (0, 0))
    y, arg = b.maxpool2d(x, (2, 2), (2, 2), (0, 0))
    p, g = b.asarray(np.ones(5, f)), b.asarray(np.ones(5, f))
    ints = b.xp.ones(5, dtype=np.int64)
    return [
        ("im2col", (x, (3, 3), (1, 1), (-1, -1)), ValueError, r"pad must be a pair of ints >= 0"),
        ("im2col", (x, (3, 3), (-1, 1), (0, 0)), ValueError, r"stride must be a pair of ints >= 1"),
        ("im2col", (x, (3, 3), (0, 0), (0, 0)), ValueError, r"stride must be a pair of ints >= 1"),
        ("im2col", (x, (7, 3), (1, 1), (0, 0)), ValueError, r"7x3 window does not fit in a 6x6 image"),
        ("im2col", (x[0], (3, 3), (1, 1), (0, 0)), ValueError, r"takes NCHW images"),
        ("col2im", (cache.col[1:], x.shape, (3, 3), (1, 1), (0, 0)), ValueError, r"col must have shape \(32, 27\)"),
        ("conv2d_forward", (x, w[:, :2], bias, (1, 1), (0, 0)), ValueError, r"W must have shape \(4, 3, 3, 3\)"),
        ("conv2d_backward", (b.xp.ascontiguousarray(out.transpose(0, 1, 3, 2)[:, :, :3]), cache, w, b.zeros(w.shape),
                             b.zeros((4,))), ValueError, r"dout must have shape \(2, 4, 4, 4\)"),
        ("maxpool2d", (x, (2, 2), (2, -2), (0, 0)), ValueError, r"stride must be a pair of ints >= 1"),
        ("maxpool2d_backward", (y[:, :, :2], arg, x.shape, (2, 2), (2, 2), (0, 0)), ValueError,
         r"dout must have shape \(2, 3, 3, 3\)"),
        ("maxpool2d_backward", (y, y, x.shape, (2, 2), (2, 2), (0, 0)), TypeError, r"argmax must be an integer array"),
        ("maxpool2d_relu_backward", (y, y[:1], arg, x.shape, (2, 2), (2, 2), (0, 0)), ValueError,
         r"y must have shape \(2, 3, 3, 3\)"),
        ("add_bias", (x, b.asarray(np.ones(1, f))), ValueError, r"b must have shape \(3,\)"),
        ("bias_grad", (x, b.zeros((4,))), ValueError, r"out must have shape \(3,\)"),
        ("relu", (ints,), TypeError, r"relu's x has dtype int64, expected float32 or float64"),
        ("sigmoid", (b.xp.ones(3, dtype=np.float16),), TypeError, r"sigmoid's x has dtype float16"),
        ("tanh_backward", (g, b.xp.ones(5, dtype=np.float64)), TypeError, r"tanh_backward's y has dtype float64, "
                                                                            r"expected float32"),
        ("relu_backward", (g, p[:3]), ValueError, r"one shape"),
        ("matmul", (ints, ints), TypeError, r"matmul's a has dtype int64"),
        ("softmax_cross_entropy", (b.zeros((0, 3)), b.xp.zeros(0, dtype=np.int64)), ValueError, r"empty batch"),
        ("softmax_cross_entropy", (b.zeros((2, 3)), b.zeros((2,))), TypeError, r"target must be an integer array"),
        ("softmax_cross_entropy", (b.zeros((2, 3)), b.xp.zeros(3, dtype=np.int64)), ValueError,
         r"target must have shape \(2,\)"),
        ("softmax_cross_entropy", (b.zeros((2, 3)), b.zeros((2, 3), dtype=np.float64)), TypeError,
         r"target has dtype float64, expected float32"),
        ("sgd_update", (ints, ints, None, 0.1, 0.0, False), TypeError, r"sgd_update's p has dtype int64"),
        ("sgd_update", (p, b.asarray(np.ones(3, f)), None, 0.1, 0.0, False), ValueError, r"does not broadcast"),
        ("adagrad_update", (p, g, b.asarray(np.ones(4, f)), 0.1, 1e-8), ValueError, r"sum_sq must have shape \(5,\)"),
        ("rmsprop_update", (p, g, b.zeros((5,), dtype=np.float64), 0.1, 0.9, 1e-8), TypeError, r"mean_sq has dtype"),
        ("adam_update", (p, g, b.zeros((5,)), b.zeros((5,)), b.zeros((), dtype=np.float64), 0.9, 0.999, 1e-8),
         ValueError, r"adam_update: lr_t must be a number or a 0-d float32 array, got float64 \(\)"),
        ("sgd_update", (p, g, None, b.zeros((1,)), 0.0, False), ValueError, r"lr must be a number or a 0-d"),
        ("adagrad_update", (p, g, b.zeros((5,)), "0.1", 1e-8), TypeError, r"lr must be a number or a 0-d float32"),
    ]


def test_kernels_refuse_bad_arguments_alike_on_every_backend(backend):
    """Each backend's public kernel methods check their arguments (metadata only) before computing: Numba's
    im2col returned a matrix for a negative pad, its SGD step did nothing on integer arrays (or the kernels
    failed inside Numba), and the reference broadcast a bias of shape (1,)."""
    for kernel, args, error, message in _bad_kernel_calls(backend):
        with pytest.raises(error, match=message):
            getattr(backend, kernel)(*args)


@pytest.mark.parametrize("accel_backend", ["numba"], indirect=True)
def test_numba_2x2_pooling_kernels_refuse_outputs_larger_than_their_input(accel_backend):
    """The raw kernels index by the pooled shape without bounds checks: a larger one read and wrote past
    the input's end (heap corruption) instead of failing."""
    k = accel_backend.k
    x, dx = np.zeros((1, 2, 4, 4), np.float32), np.empty((1, 2, 4, 4), np.float32)
    for shape in [(1, 2, 3, 2), (1, 3, 2, 2), (2, 2, 2, 2)]:
        out, argmax = np.zeros(shape, np.float32), np.zeros(shape, np.int8)
        with pytest.raises(ValueError, match="maxpool2d_2x2: out and argmax must be"):
            k.maxpool2d_2x2(x, out, argmax)
        with pytest.raises(ValueError, match="maxpool2d_backward_2x2: dout, argmax"):
            k.maxpool2d_backward_2x2(out, argmax, None, dx)
    with pytest.raises(ValueError, match="im2col: col must be"):
        k.im2col(x, np.empty((2, 3, 3, 1, 2, 2), np.float32), 1, 1, -1, 0)
