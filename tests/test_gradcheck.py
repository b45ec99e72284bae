"""Every layer and loss passes a float64 numerical gradient check on every backend, and the check
itself catches a wrong backward pass."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp

TOL = 1e-5  # float64 central differences land near 1e-8; a wrong backward lands near 1


def away_from_kinks(shape, rng):
    """Random inputs whose magnitudes stay clear of 0, where ReLU and max-pooling ties have kinks."""
    x = rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    return x


LAYER_CASES = {
    "linear": (lambda: bp.Linear(5, 4), (3, 5)),
    "linear-batch1": (lambda: bp.Linear(3, 2), (1, 3)),
    "linear-relu": (lambda: bp.Linear(5, 4, activation="relu"), (3, 5)),
    "conv-stride2-pad-nonsquare": (lambda: bp.Conv2D(3, 4, (3, 2), stride=2, pad=1), (2, 3, 7, 6)),
    "conv-batch1-odd": (lambda: bp.Conv2D(2, 3, 3), (1, 2, 5, 5)),
    "conv-rect-stride-pad": (lambda: bp.Conv2D(1, 2, (2, 3), stride=(1, 2), pad=(0, 1)), (2, 1, 5, 6)),
    "maxpool-stride-ne-kernel-pad": (lambda: bp.MaxPool2D(3, stride=2, pad=1), (2, 2, 7, 6)),
    "maxpool-overlap": (lambda: bp.MaxPool2D((2, 3), stride=1), (1, 2, 4, 5)),
    "maxpool-2": (lambda: bp.MaxPool2D(2), (2, 3, 4, 4)),
    "relu-maxpool-2": (lambda: bp.ReLUMaxPool2D(2), (2, 3, 4, 4)),
    "relu-maxpool-overlap-pad": (lambda: bp.ReLUMaxPool2D(3, stride=2, pad=1), (2, 2, 7, 6)),
    "flatten": (lambda: bp.Flatten(), (2, 3, 2, 2)),
    "relu": (lambda: bp.ReLU(), (4, 5)),
    "sigmoid": (lambda: bp.Sigmoid(), (4, 5)),
    "tanh": (lambda: bp.Tanh(), (4, 5)),
    "softmax": (lambda: bp.Softmax(), (4, 5)),
    "dropout-train": (lambda: bp.Dropout(0.4), (6, 5)),
    "batchnorm1d-train": (lambda: bp.BatchNorm1D(4), (5, 4)),
    "batchnorm2d-train": (lambda: bp.BatchNorm2D(3), (2, 3, 3, 4)),
    "batchnorm1d-eval": (lambda: bp.BatchNorm1D(4).eval(), (5, 4)),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_layer_gradients(backend, rng, case):
    make, shape = LAYER_CASES[case]
    with bp.use_backend(backend):
        layer = make()
    if isinstance(layer, bp.BatchNorm1D) and not layer.training:
        layer.running_mean[...] = backend.asarray(rng.standard_normal(4))
        layer.running_var[...] = backend.asarray(rng.uniform(0.5, 2.0, 4))
    result = bp.gradcheck(layer, away_from_kinks(shape, rng))
    assert result.max_rel_error < TOL, str(result)
    assert set(result.errors) == {"input", *layer.named_parameters()}


def test_sequential_cnn_gradients(backend, rng):
    bp.manual_seed(0)  # weights independent of the tests before (about 1 draw in 40 puts a ReLU at a kink)
    with bp.use_backend(backend):
        # (a bias right before BatchNorm has an exactly-zero gradient: keep the ReLU between them)
        model = bp.Sequential(bp.Conv2D(2, 3, 3, pad=1), bp.ReLU(), bp.BatchNorm2D(3), bp.MaxPool2D(2),
                              bp.Flatten(), bp.Linear(12, 4), bp.Tanh(), bp.Linear(4, 3))
    result = bp.gradcheck(model, away_from_kinks((2, 2, 4, 4), rng))
    assert result.max_rel_error < TOL, str(result)


def test_loss_gradients(backend, rng):
    pred = rng.standard_normal((4, 3))
    labels = np.array([0, 2, 1, 1])
    probs = 1 / (1 + np.exp(-pred))
    cases = [
        (bp.SoftmaxCrossEntropy(backend=backend), pred, labels),
        (bp.SoftmaxCrossEntropy(backend=backend), pred, np.eye(3)[labels]),
        (bp.MSE(backend=backend), pred, rng.standard_normal((4, 3))),
        (bp.BinaryCrossEntropy(backend=backend), probs, (rng.random((4, 3)) > 0.5).astype(float)),
        (bp.BCEWithLogits(backend=backend), pred, rng.random((4, 3))),
    ]
    for loss, p, t in cases:
        result = bp.gradcheck(loss, p, t)
        assert result.max_rel_error < TOL, f"{type(loss).__name__}: {result}"


class BrokenReLU(bp.ReLU):
    """A ReLU whose backward forgets the mask: gradcheck must notice."""

    def backward(self, dout):
        return dout


def test_gradcheck_catches_a_wrong_backward(backend, rng):
    with bp.use_backend(backend):
        layer = BrokenReLU()
    assert bp.gradcheck(layer, away_from_kinks((4, 5), rng)).max_rel_error > 0.5


def test_a_nan_error_is_the_worst_error():
    """Python's max() skips a NaN that is not first; the result must not."""
    assert np.isnan(bp.GradcheckResult({"input": 1e-10, "W": 2e-10, "b": float("nan")}).max_rel_error)


def test_gradcheck_leaves_the_module_unchanged(backend, rng):
    with bp.use_backend(backend):
        layer = bp.Linear(3, 2)
    before = backend.to_numpy(layer.W.data).copy()
    bp.gradcheck(layer, rng.standard_normal((2, 3)))
    assert layer.W.dtype == np.float32
    np.testing.assert_array_equal(backend.to_numpy(layer.W.data), before)


def test_gradcheck_rejects_non_modules():
    with pytest.raises(TypeError, match="Layer or a Loss"):
        bp.gradcheck(lambda x: x, np.zeros(3))
