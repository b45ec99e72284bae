"""Loss values against their formulas, stability at the extremes, and target validation."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp


def value(loss, backend, pred, target):
    return float(loss.forward(backend.asarray(pred), backend.asarray(target)))


def test_mse_is_the_mean_over_all_elements(backend64, rng):
    p, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    assert value(bp.MSE(backend=backend64), backend64, p, t) == pytest.approx(((p - t) ** 2).mean())


def test_binary_cross_entropy_formula_and_extremes(backend, rng):
    p = rng.uniform(0.05, 0.95, (6, 1))
    t = (rng.random((6, 1)) > 0.5).astype(float)
    loss = bp.BinaryCrossEntropy(backend=backend)
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert value(loss, backend, p, t) == pytest.approx(expected, rel=1e-5)
    extreme = value(loss, backend, np.array([[0.0], [1.0]]), np.array([[1.0], [0.0]]))
    assert np.isfinite(extreme) and extreme > 10
    assert np.isfinite(backend.to_numpy(loss.backward())).all()


def test_bce_with_logits_matches_sigmoid_then_bce_and_is_stable(backend64, rng):
    z = rng.standard_normal((5, 2)) * 3
    t = rng.random((5, 2))
    p = 1 / (1 + np.exp(-z))
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert value(bp.BCEWithLogits(backend=backend64), backend64, z, t) == pytest.approx(expected, rel=1e-10)
    huge = value(bp.BCEWithLogits(backend=backend64), backend64, np.array([[1e4, -1e4]]), np.array([[0.0, 1.0]]))
    assert huge == pytest.approx(1e4)


def test_softmax_cross_entropy_int_and_onehot_agree(backend, rng):
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    loss = bp.SoftmaxCrossEntropy(backend=backend)
    a = value(loss, backend, logits, labels)
    ga = backend.to_numpy(loss.backward())
    b = value(loss, backend, logits, np.eye(4)[labels])
    np.testing.assert_allclose(backend.to_numpy(loss.backward()), ga, rtol=1e-5, atol=1e-7)
    assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.parametrize("labels,expected", [
    (np.array([0, 1, 4]), r"labels must lie in \[0, 3\], got values in \[0, 4\]"),
    (np.array([0, -1, 2]), r"labels must lie in \[0, 3\]"),
    (np.array([[0], [1], [2]]), r"integer labels must have shape \(3,\)"),
    (np.array([0, 1]), r"integer labels must have shape \(3,\)"),
    (np.eye(3), r"target shape \(3, 3\) does not match prediction shape \(3, 4\)"),
    (np.full((3, 4), 2.0), r"targets must lie in \[0, 1\]"),
    (np.full((3, 4), 0.5), r"each row of probability targets must sum to 1"),
    (np.full((3, 4), np.nan), r"targets must lie in \[0, 1\] \(and not be NaN\)"),
])
def test_softmax_cross_entropy_rejects_bad_labels(backend, labels, expected):
    loss = bp.SoftmaxCrossEntropy(backend=backend)
    with pytest.raises(ValueError, match=expected):
        loss.forward(backend.zeros((3, 4)), backend.asarray(labels))


@pytest.mark.parametrize("loss_cls", [bp.MSE, bp.BinaryCrossEntropy, bp.BCEWithLogits])
def test_elementwise_losses_reject_mismatched_shapes(backend, loss_cls):
    with pytest.raises(ValueError, match=r"target shape \(3,\) does not match prediction shape \(3, 1\)"):
        loss_cls(backend=backend).forward(backend.zeros((3, 1)), backend.zeros((3,)))


def test_loss_rejects_target_of_other_dtype(backend):
    with pytest.raises(TypeError, match="astype"):
        bp.MSE(backend=backend).forward(backend.zeros((2, 1)), backend.zeros((2, 1), dtype=np.float64))


def test_a_dtype_error_suggests_converting_the_model_only_to_a_dtype_models_have(backend):
    layer = bp.Linear(3, 2, backend=backend)
    with pytest.raises(TypeError) as info:
        layer.forward(backend.xp.asarray(np.zeros((2, 3), np.float16)))  # (backend.asarray would cast)
    assert "astype('float32')" in str(info.value) and "model.to" not in str(info.value)
    with pytest.raises(TypeError, match=r"model.to\(dtype='float64'\)"):
        layer.forward(backend.xp.asarray(np.zeros((2, 3), np.float64)))


@pytest.mark.parametrize("loss_cls", [bp.MSE, bp.BinaryCrossEntropy, bp.BCEWithLogits])
def test_integer_targets_of_a_value_loss_keep_the_prediction_s_dtype(backend, loss_cls):
    """int64 or bool 0/1 targets are cast to the predictions' float32: NumPy would otherwise compute the
    loss and the whole backward pass in float64."""
    pred = backend.asarray(np.array([[0.2], [0.7], [0.9]], np.float32))
    for target in (np.array([[0], [1], [1]]), np.array([[False], [True], [True]])):
        loss = loss_cls(backend=backend)
        as_float = loss_cls(backend=backend)
        value = loss.forward(pred, backend.asarray(target))
        assert value.dtype == np.float32 and loss.backward().dtype == np.float32
        expected = as_float.forward(pred, backend.asarray(target.astype(np.float32)))
        assert float(value) == float(expected)


@pytest.mark.parametrize("loss_cls", [bp.BinaryCrossEntropy, bp.BCEWithLogits])
def test_nan_probability_targets_are_refused(backend, loss_cls):
    with pytest.raises(ValueError, match="not be NaN"):
        loss_cls(backend=backend).forward(backend.zeros((2, 1)), backend.asarray(np.array([[0.5], [np.nan]],
                                                                                          np.float32)))


def device_array(backend, host):
    """``host`` on the backend as it is, dtype and byte order kept (``backend.asarray`` would convert)."""
    if backend.xp is not np and not host.dtype.isnative:
        pytest.skip(f"{backend.name} arrays cannot hold {host.dtype}")
    return backend.xp.asarray(host)


EVERY_LOSS = [bp.MSE, bp.BinaryCrossEntropy, bp.BCEWithLogits, bp.SoftmaxCrossEntropy]


@pytest.mark.parametrize("loss_cls", EVERY_LOSS)
@pytest.mark.parametrize("dtype", [">f4", "float16", "int64"])
def test_losses_refuse_predictions_of_a_dtype_they_cannot_compute_in(backend, loss_cls, dtype):
    pred = device_array(backend, np.full((3, 2), 0.5, dtype=dtype))
    with pytest.raises(TypeError, match=rf"{loss_cls.__name__} prediction has dtype .*expected float32 or float64"):
        loss_cls(backend=backend).forward(pred, backend.asarray(np.array([[0.0, 1.0]] * 3, np.float32)))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "uint64", ">i8", ">i4", "<i2"])
def test_softmax_cross_entropy_takes_integer_labels_of_any_width_and_byte_order(backend, dtype):
    """Big-endian int64 labels failed inside Numba's kernel; any integer labels now give what int64 gives."""
    logits = backend.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    labels = np.array([0, 2, 1, 2])
    loss = bp.SoftmaxCrossEntropy(backend=backend)
    expected, grad = float(loss.forward(logits, backend.asarray(labels))), backend.to_numpy(loss.backward())
    assert float(loss.forward(logits, device_array(backend, labels.astype(dtype)))) == expected
    np.testing.assert_array_equal(backend.to_numpy(loss.backward()), grad)


@pytest.mark.parametrize("loss_cls", EVERY_LOSS)
@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
def test_losses_refuse_an_empty_batch(backend, loss_cls, shape):
    """A mean over no values was NaN (and MSE's backward divided by zero): refused instead."""
    target = backend.zeros((shape[0],), dtype=np.int64) if loss_cls is bp.SoftmaxCrossEntropy else backend.zeros(shape)
    with pytest.raises(ValueError, match=r"the batch is empty .* skip empty batches"):
        loss_cls(backend=backend).forward(backend.zeros(shape), target)


@pytest.mark.parametrize("loss, shape, target", [(bp.MSE, (2, 1), [[1.0], [2.0]]),
                                                 (bp.SoftmaxCrossEntropy, (2, 3), [0, 1]),
                                                 (bp.BCEWithLogits, (2, 1), [[1.0], [0.0]])])
def test_a_list_as_target_is_a_type_error_naming_the_fix(backend, loss, shape, target):
    with pytest.raises(TypeError, match=r"target is a builtins\.list.*backend\.asarray"):
        loss(backend=backend).forward(backend.zeros(shape), target)
