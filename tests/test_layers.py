"""Layer behaviour beyond gradients: shapes, initialization, modes, and clear errors on bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

import backprop as bp


@pytest.fixture
def on(backend):
    """Build layers on the test's backend."""
    with bp.use_backend(backend):
        yield backend


def test_linear_shapes_and_formula(on, rng):
    layer = bp.Linear(4, 3)
    assert layer.W.shape == (4, 3) and layer.b.shape == (3,)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = on.to_numpy(layer.forward(on.asarray(x)))
    np.testing.assert_allclose(y, x @ on.to_numpy(layer.W.data) + on.to_numpy(layer.b.data), rtol=1e-5)


def test_conv_matches_direct_convolution(on, rng):
    layer = bp.Conv2D(2, 3, (3, 2), stride=2, pad=1)
    assert layer.W.shape == (3, 2, 3, 2) and layer.b.shape == (3,)
    layer.b.data[...] = on.asarray(rng.standard_normal(3))
    x = rng.standard_normal((2, 2, 7, 6)).astype(np.float32)
    y = on.to_numpy(layer.forward(on.asarray(x)))
    w, b = on.to_numpy(layer.W.data), on.to_numpy(layer.b.data)
    xp_ = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert y.shape == (2, 3, 4, 4)
    for oy in range(4):
        for ox in range(4):
            patch = xp_[:, :, 2 * oy:2 * oy + 3, 2 * ox:2 * ox + 2]
            np.testing.assert_allclose(y[:, :, oy, ox], np.einsum("ncij,fcij->nf", patch, w) + b,
                                       rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make,shape,expected", [
    (lambda: bp.Linear(4, 3), (2, 5), r"Linear expected input of shape \(N, 4\), got \(2, 5\)"),
    (lambda: bp.Linear(4, 3), (2, 4, 1), r"Linear expected .*\(N, 4\), got \(2, 4, 1\)"),
    (lambda: bp.Conv2D(3, 4, 3), (2, 1, 8, 8), r"Conv2D expected input of shape \(N, 3, \*, \*\), got \(2, 1, 8, 8\)"),
    (lambda: bp.Conv2D(1, 4, 5), (2, 1, 3, 3), r"5x5 window does not fit in a 3x3 image"),
    (lambda: bp.BatchNorm1D(4), (2, 3), r"BatchNorm1D expected input of shape \(N, 4\), got \(2, 3\)"),
    (lambda: bp.BatchNorm2D(3), (2, 4, 5, 5), r"BatchNorm2D expected .*\(N, 3, \*, \*\), got \(2, 4, 5, 5\)"),
    (lambda: bp.BatchNorm1D(4), (1, 4), r"more than one value per feature"),
    (lambda: bp.MaxPool2D(2), (2, 8, 8), r"MaxPool2D expected input of shape \(N, \*, \*, \*\)"),
    (lambda: bp.ReLUMaxPool2D(3), (2, 1, 2, 2), r"maxpool2d_relu: a 3x3 window does not fit in a 2x2 image"),
])
def test_wrong_input_shape_is_a_value_error(on, make, shape, expected):
    with pytest.raises(ValueError, match=expected):
        make().forward(on.zeros(shape))


@pytest.mark.parametrize("make,expected", [
    (lambda: bp.Linear(0, 3), "in_features"),
    (lambda: bp.Conv2D(1, 2, 0), "kernel_size"),
    (lambda: bp.Conv2D(1, 2, (3, 3, 3)), "pair"),
    (lambda: bp.MaxPool2D(2, pad=2), "half of kernel_size"),
    (lambda: bp.Dropout(1.0), r"\[0, 1\)"),
    (lambda: bp.Linear(2, 2, init="bogus"), "unknown init"),
    (lambda: bp.Linear(2, 2, activation="tanh"), r"activation must be one of \(None, 'relu'\), got 'tanh'"),
    (lambda: bp.Linear(2, 2, init=float("nan")), "init std must be positive and finite"),
    (lambda: bp.BatchNorm1D(2, eps=float("nan")), "eps must be positive and finite"),
    (lambda: bp.BatchNorm2D(2, momentum=float("nan")), r"momentum must be in \[0, 1\]"),
])
def test_bad_layer_arguments(on, make, expected):
    with pytest.raises(ValueError, match=expected):
        make()


def test_sequential_draws_he_before_relu_and_glorot_otherwise(on):
    bp.manual_seed(0)
    model = bp.Sequential(bp.Linear(400, 300), bp.ReLU(), bp.Linear(300, 200), bp.Sigmoid(),
                          bp.Linear(200, 100), bp.Flatten(), bp.Dropout(0.1), bp.Tanh())
    stds = [float(on.to_numpy(model[i].W.data).std()) for i in (0, 2, 4)]
    assert stds[0] == pytest.approx(np.sqrt(2 / 400), rel=0.02)  # He
    assert stds[1] == pytest.approx(np.sqrt(2 / 500), rel=0.02)  # Glorot
    assert stds[2] == pytest.approx(np.sqrt(2 / 300), rel=0.02)  # Glorot (Tanh, past Flatten/Dropout)
    chained = bp.Sequential(bp.Linear(400, 300), bp.Linear(300, 200), bp.BatchNorm1D(200), bp.ReLU())
    assert float(on.to_numpy(chained[0].W.data).std()) == pytest.approx(np.sqrt(2 / 700), rel=0.02)
    assert float(on.to_numpy(chained[1].W.data).std()) == pytest.approx(np.sqrt(2 / 300), rel=0.02)
    fused = bp.Sequential(bp.Conv2D(100, 50, 2), bp.ReLUMaxPool2D(2))  # counts as a ReLU
    assert float(on.to_numpy(fused[0].W.data).std()) == pytest.approx(np.sqrt(2 / 400), rel=0.02)  # He
    own = bp.Sequential(bp.Linear(400, 300, activation="relu"), bp.Linear(300, 200))
    assert float(on.to_numpy(own[0].W.data).std()) == pytest.approx(np.sqrt(2 / 400), rel=0.02)  # He: its ReLU
    explicit = bp.Sequential(bp.Linear(400, 300, init=0.01), bp.ReLU())
    assert float(on.to_numpy(explicit[0].W.data).std()) == pytest.approx(0.01, rel=0.02)
    block = bp.Sequential(bp.Tanh(), bp.Linear(300, 200))
    block[1].W.data[...] = 1  # as if trained
    nested = bp.Sequential(bp.Linear(400, 300), block, bp.ReLU())
    assert float(on.to_numpy(nested[0].W.data).std()) == pytest.approx(np.sqrt(2 / 700), rel=0.02)  # Glorot
    assert (on.to_numpy(nested[1][1].W.data) == 1).all()  # a wrapped block keeps its weights


@pytest.mark.parametrize("make", [bp.ReLU, bp.Sigmoid, bp.Tanh, bp.Softmax])
def test_activation_backward_refuses_a_gradient_of_another_shape(on, make):
    layer = make()
    layer.forward(on.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"gradient of the output's shape \(2, 3, 4, 4\), got \(1, 1, 1, 4\)"):
        layer.backward(on.zeros((1, 1, 1, 4)))


def test_dropout_scales_in_training_and_is_identity_in_eval(on):
    layer = bp.Dropout(0.25)
    x = on.xp.ones((200, 500), dtype=np.float32)
    y = on.to_numpy(layer.forward(x))
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert (y == 0).mean() == pytest.approx(0.25, abs=0.01)
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    np.testing.assert_array_equal(on.to_numpy(layer.backward(x)), y)  # same mask
    layer.eval()
    assert layer.forward(x) is x and layer.backward(x) is x


def test_batchnorm_running_statistics_and_eval(on, rng):
    layer = bp.BatchNorm2D(2, momentum=0.5)
    x = (rng.standard_normal((8, 2, 3, 3)) * [[[[2.0]], [[0.5]]]] + [[[[1.0]], [[-3.0]]]]).astype(np.float32)
    y = on.to_numpy(layer.forward(on.asarray(x)))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, atol=1e-3)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(on.to_numpy(layer.running_mean), 0.5 * mean, rtol=1e-5)
    np.testing.assert_allclose(on.to_numpy(layer.running_var), 0.5 + 0.5 * var, rtol=1e-5)
    layer.eval()
    y_eval = on.to_numpy(layer.forward(on.asarray(x)))
    expected = (x - (0.5 * mean)[:, None, None]) / np.sqrt(0.5 + 0.5 * var + 1e-5)[:, None, None]
    np.testing.assert_allclose(y_eval, expected, rtol=1e-4, atol=1e-5)


def test_softmax_layer_rows_sum_to_one(on, rng):
    y = on.to_numpy(bp.Softmax().forward(on.asarray(rng.standard_normal((3, 4)) * 50)))
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)


def test_train_eval_flags_propagate(on):
    model = bp.Sequential(bp.Linear(2, 2), bp.Dropout(0.5))
    model.eval()
    assert not model.training and not model[1].training
    model.train()
    assert model[1].training


def test_init_takes_a_numpy_number_as_the_std_and_refuses_what_is_no_number(on):
    layer = bp.Linear(400, 300, init=np.float32(0.01))
    assert float(on.to_numpy(layer.W.data).std()) == pytest.approx(0.01, rel=0.02)
    with pytest.raises(TypeError, match="init std must be a real number"):
        bp.Linear(2, 2, init=None)


# Every layer, with an input shape it takes: the checks below run over all of them.
EVERY_LAYER = {
    "linear": (lambda: bp.Linear(4, 3), (2, 4)),
    "conv2d": (lambda: bp.Conv2D(2, 3, 3, pad=1), (2, 2, 5, 4)),
    "maxpool2d": (lambda: bp.MaxPool2D(2), (2, 3, 4, 6)),
    "relu-maxpool2d": (lambda: bp.ReLUMaxPool2D(3, stride=2, pad=1), (2, 3, 5, 5)),
    "batchnorm1d": (lambda: bp.BatchNorm1D(4), (3, 4)),
    "batchnorm2d": (lambda: bp.BatchNorm2D(2), (2, 2, 3, 3)),
    "relu": (lambda: bp.ReLU(), (2, 5)),
    "sigmoid": (lambda: bp.Sigmoid(), (2, 5)),
    "tanh": (lambda: bp.Tanh(), (2, 5)),
    "softmax": (lambda: bp.Softmax(), (2, 5)),
    "dropout": (lambda: bp.Dropout(0.5), (2, 5)),
    "flatten": (lambda: bp.Flatten(), (2, 3, 2, 2)),
}


def device_array(backend, host):
    """``host`` on the backend as it is, dtype and byte order kept (``backend.asarray`` would convert)."""
    if backend.xp is not np and (host.dtype.kind == "O" or not host.dtype.isnative):
        pytest.skip(f"{backend.name} arrays cannot hold {host.dtype}")
    return backend.xp.asarray(host)


@pytest.mark.parametrize("case", EVERY_LAYER)
@pytest.mark.parametrize("dtype", ["int64", "float16", ">f4", "object", "complex64"])
def test_every_layer_refuses_an_input_dtype_it_cannot_compute_in(on, case, dtype):
    """Integers (Sigmoid on Numba returned int64 zeros), half floats, big-endian, object or complex
    input: a TypeError naming the dtypes it takes, from the layer, not from inside a kernel."""
    make, shape = EVERY_LAYER[case]
    layer = make()
    x = device_array(on, np.ones(shape, dtype=dtype))
    with pytest.raises(TypeError, match=rf"{type(layer).__name__} input has dtype .*expected float.*astype"):
        layer.forward(x)


@pytest.mark.parametrize("case", EVERY_LAYER)
def test_every_layer_takes_an_empty_batch(on, case):
    """N = 0 gives an empty output, an empty input gradient and zero parameter gradients (a BatchNorm
    in inference mode; in training it needs two values per feature, checked above)."""
    make, shape = EVERY_LAYER[case]
    layer = make()
    if isinstance(layer, bp.BatchNorm1D | bp.BatchNorm2D):
        layer.eval()
    for p in layer.parameters():
        p.grad[...] = 1
    y = layer.forward(on.zeros((0, *shape[1:])))
    assert y.shape[0] == 0
    assert layer.backward(on.zeros(y.shape)).shape == (0, *shape[1:])
    for p in layer.parameters():
        assert not on.to_numpy(p.grad).any()


@pytest.mark.parametrize("case", EVERY_LAYER)
def test_every_layer_checks_the_gradient_against_its_output(on, case):
    """A gradient missing the batch axis (which broadcast into BatchNorm's beta.grad), one of another
    batch size or dtype, or one before any forward: a clear error, in backward and backward_params."""
    make, shape = EVERY_LAYER[case]
    layer = make()
    with pytest.raises(RuntimeError, match="needs a forward"):
        layer.backward(on.zeros(shape))
    y = layer.forward(on.asarray(np.random.default_rng(0).standard_normal(shape)))
    for step in (layer.backward, layer.backward_params):
        for bad in (y.shape[1:], (y.shape[0] + 1, *y.shape[1:]), y.shape[::-1] if y.shape[0] != y.shape[-1] else ()):
            with pytest.raises(ValueError, match=rf"output's shape \({y.shape[0]}, .*got {re.escape(str(bad))}"):
                step(on.zeros(bad))
        with pytest.raises(TypeError, match="gradient has dtype float64, expected float32"):
            step(on.zeros(y.shape, dtype=np.float64))


def test_a_linear_layer_with_its_relu_computes_what_the_two_layers_do(on, rng):
    """Linear(activation="relu") runs the bias and the ReLU as one kernel each way; the values and
    gradients are those of Linear followed by ReLU."""
    bp.manual_seed(1)
    fused = bp.Linear(6, 5, activation="relu", backend=on)
    plain = bp.Sequential(bp.Linear(6, 5, backend=on), bp.ReLU(backend=on))
    plain[0].W.data[...] = fused.W.data
    plain[0].b.data[...] = on.asarray(rng.standard_normal(5).astype(np.float32))
    fused.b.data[...] = plain[0].b.data
    x, dout = (on.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((4, 6), (4, 5)))
    np.testing.assert_allclose(on.to_numpy(fused.forward(x)), on.to_numpy(plain.forward(x)), rtol=1e-6)
    np.testing.assert_allclose(on.to_numpy(fused.backward(dout)), on.to_numpy(plain.backward(dout)), rtol=1e-5,
                               atol=1e-6)
    for mine, theirs in ((fused.W, plain[0].W), (fused.b, plain[0].b)):
        np.testing.assert_allclose(on.to_numpy(mine.grad), on.to_numpy(theirs.grad), rtol=1e-5, atol=1e-6)
    assert repr(fused) == "Linear(6, 5, activation='relu')"
