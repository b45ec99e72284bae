"""Sequential end to end: save/load, moving between backends and dtypes, the fit loop and its
guards against bad data and divergence, and a small CNN that really learns."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import backprop as bp


def small_cnn(backend, seed=0):
    bp.manual_seed(seed)
    with bp.use_backend(backend):
        return bp.Sequential(bp.Conv2D(1, 4, 3, pad=1), bp.BatchNorm2D(4), bp.ReLU(), bp.MaxPool2D(2),
                             bp.Flatten(), bp.Dropout(0.1), bp.Linear(4 * 4 * 4, 3))


def weights(model):
    return {k: model.backend.to_numpy(v).copy() for k, v in model.state_arrays().items()}


# -- save / load ------------------------------------------------------------------------------------

def test_save_load_round_trip_gives_identical_outputs(backend, rng, tmp_path):
    model = small_cnn(backend)
    model.fit(rng.standard_normal((20, 1, 8, 8)), rng.integers(0, 3, 20), loss=bp.SoftmaxCrossEntropy(),
              optimizer=bp.Adam(model.parameters()), batch_size=5, progress=False)
    path = model.save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    other = small_cnn(backend, seed=1).load(path)
    x = rng.standard_normal((6, 1, 8, 8))
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    assert weights(other).keys() == weights(model).keys()
    assert "1.running_mean" in weights(other)
    with np.load(path, allow_pickle=False) as npz:  # readable without pickle
        assert "0.W" in npz.files


def corrupt_files(path, tmp_path, rng):
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(rng.bytes(1000))
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "missing.npz", "w") as dst:
        for item in src.namelist():
            if item != "0.W.npy":
                dst.writestr(item, src.read(item))
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "junk-member.npz", "w") as dst:
        for item in src.namelist():  # a member with a valid CRC that is not an .npy file
            dst.writestr(item, b"JUNK" * 10 if item == "0.W.npy" else src.read(item))
    return {"truncated.npz": "unreadable, truncated", "garbage.npz": "unreadable", "foreign.npz":
            "not a backprop checkpoint", "missing.npz": r"missing \['0.W'\]",
            "junk-member.npz": r"members \['0.W'\] are not arrays"}


def test_load_rejects_bad_files_and_leaves_the_model_unchanged(backend, rng, tmp_path):
    model = small_cnn(backend)
    path = small_cnn(backend, seed=5).save(tmp_path / "good.npz")
    before = weights(model)
    cases = corrupt_files(path, tmp_path, rng)
    for name, message in cases.items():
        with pytest.raises(bp.CheckpointError, match=message):
            model.load(tmp_path / name)
    with pytest.raises(bp.CheckpointError, match="saved from layers"):
        bp.Sequential(bp.Linear(2, 2, backend=backend)).load(path)
    wider = bp.Sequential(bp.Conv2D(1, 5, 3, pad=1, backend=backend), bp.BatchNorm2D(5, backend=backend),
                          bp.ReLU(backend=backend), bp.MaxPool2D(2, backend=backend),
                          bp.Flatten(backend=backend), bp.Dropout(0.1, backend=backend),
                          bp.Linear(80, 3, backend=backend))
    with pytest.raises(bp.CheckpointError, match=r"0.W has shape \(4, 1, 3, 3\), the model expects"):
        wider.load(path)
    with pytest.raises(bp.CheckpointError, match="float32, the model is float64"):
        small_cnn(backend).to(dtype="float64").load(path)
    with pytest.raises(FileNotFoundError):
        model.load(tmp_path / "nothing.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(bp.CheckpointError, match="not an .npz"):
        model.load(tmp_path / "plain.npy")
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, before[k])


def test_load_rejects_nan_weights(backend, tmp_path):
    model = small_cnn(backend)
    model[6].W.data[0, 0] = np.nan
    path = model.save(tmp_path / "nan.npz")
    with pytest.raises(bp.CheckpointError, match="NaN or Inf"):
        small_cnn(backend).load(path)


# -- to() -------------------------------------------------------------------------------------------

def test_to_moves_parameters_buffers_and_optimizer_state(backend, rng):
    model = small_cnn(backend)
    opt = bp.Adam(model.parameters())
    x, y = rng.standard_normal((8, 1, 8, 8)), rng.integers(0, 3, 8)
    model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=opt, batch_size=4, progress=False)
    before = model.predict(x)
    model.to(dtype="float64")
    assert model.backend.dtype == np.float64 and all(layer.backend is model.backend for layer in model)
    for p in model.parameters():
        assert p.dtype == np.float64 and p.grad.dtype == np.float64 and p.backend is model.backend
        assert set(p.state) == {"m", "v"} and all(v.dtype == np.float64 for v in p.state.values())
    assert model[1].running_var.dtype == np.float64
    np.testing.assert_allclose(model.predict(x), before, rtol=1e-5, atol=1e-6)
    model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=opt, batch_size=4, progress=False)
    model.to(backend)  # back to float32 on the test's backend
    assert all(p.dtype == np.float32 and p.state["m"].dtype == np.float32 for p in model.parameters())
    for name in bp.available_backends():
        if bp.available_backends()[name] is None:
            model.to(name)
            assert model.backend.name == name and all(model.backend.is_array(p.data) for p in model.parameters())
            assert all(model.backend.is_array(v) for p in model.parameters() for v in p.state.values())


def test_summary_lists_layers_shapes_and_counts(backend):
    text = small_cnn(backend).summary((1, 8, 8))
    assert "Conv2D" in text and "('N', 4, 8, 8)" in text and "('N', 64)" in text
    assert f"Total parameters: {40 + 8 + 64 * 3 + 3:,}" in text


# -- fit ----------------------------------------------------------------------------------------------

def regression_data(rng, n=64):
    x = rng.standard_normal((n, 3))
    return x, x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3


@pytest.mark.parametrize("batch_size", [None, 1, 16])
def test_fit_full_batch_single_sample_and_minibatch(backend, rng, batch_size):
    x, y = regression_data(rng)
    bp.manual_seed(0)
    model = bp.Sequential(bp.Linear(3, 1, backend=backend))
    history = model.fit(x, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters(), lr=0.05),
                        epochs=200 if batch_size is None else 20, batch_size=batch_size, seed=0,
                        validation_data=regression_data(rng, 16), progress=False)
    assert set(history) == {"loss", "val_loss"} and len(history["loss"]) == (200 if batch_size is None else 20)
    assert history["loss"][-1] < 1e-3 < history["loss"][0]
    assert set(model.evaluate(x, y, loss=bp.MSE())) == {"loss"}  # no accuracy for a regression
    assert model.evaluate(x, y, loss=bp.MSE())["loss"] < 1e-3


def test_fit_is_reproducible_with_a_seed(backend, rng):
    x, y = rng.standard_normal((40, 1, 8, 8)), rng.integers(0, 3, 40)

    def train():
        model = small_cnn(backend)
        model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.Adam(model.parameters()),
                  epochs=2, batch_size=8, seed=3, progress=False)
        return model.predict(x)
    np.testing.assert_array_equal(train(), train())


def test_fit_shows_progress_and_epoch_lines(backend, rng, capsys):
    """Captured output is no terminal: the epoch lines, and no progress bar frames (tests/test_callbacks.py
    shows the bar on a terminal)."""
    x, y = regression_data(rng, 20)
    model = bp.Sequential(bp.Linear(3, 1, backend=backend))
    model.fit(x, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=2, batch_size=5)
    out, err = capsys.readouterr()
    assert "epoch 1/2  loss" in out and "epoch 2/2  loss" in out and "\r" not in out + err


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_divergence_stops_with_epoch_and_batch_and_restores_weights_and_statistics(backend, rng, tmp_path):
    x, y = regression_data(rng)
    with bp.use_backend(backend):
        model = bp.Sequential(bp.Linear(3, 8), bp.BatchNorm1D(8), bp.Linear(8, 1))
    diverged = r"training loss became (nan|inf) at or before epoch \d+, batch \d+"
    with pytest.raises(bp.TrainingDivergedError, match=diverged):
        model.fit(x, y * 1e3, loss=bp.MSE(), optimizer=bp.SGD(model.parameters(), lr=50.0), epochs=50,
                  batch_size=8, progress=False)
    assert all(np.isfinite(backend.to_numpy(a)).all() for a in model.state_arrays().values())
    assert np.isfinite(model.predict(x)).all()
    small_copy = bp.Sequential(*[type(layer)(*args, backend=backend) for layer, args in
                                 zip(model, [(3, 8), (8,), (8, 1)], strict=True)])
    small_copy.load(model.save(tmp_path / "after.npz"))  # a diverged run still saves a loadable model


def test_batchnorm_with_a_last_batch_of_one_is_refused_before_training(backend, rng):
    with bp.use_backend(backend):
        model = bp.Sequential(bp.Linear(3, 4), bp.BatchNorm1D(4), bp.Linear(4, 1))
    before = weights(model)
    with pytest.raises(ValueError, match="last batch of one sample"):
        model.fit(*regression_data(rng, 9), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()),
                  batch_size=4, progress=False)
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_divergence_in_the_last_update_or_the_validation_loss_is_caught_too(backend, rng):
    """A run whose last step blows the weights up has no later loss to notice it."""
    x, y = regression_data(rng, 8)
    model = bp.Sequential(bp.Linear(3, 1, backend=backend))
    before = weights(model)
    with pytest.raises(bp.TrainingDivergedError,
                       match="weights or the optimizer's state became NaN or Inf at or before epoch 1, batch 1"):
        model.fit(x, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters(), lr=1e38), epochs=1, progress=False)
    for k, v in weights(model).items():  # the weights before that update, which gave a finite loss
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(bp.TrainingDivergedError, match="validation loss became inf after epoch 1"):
        model.fit(x, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters(), lr=0.01), epochs=1, progress=False,
                  validation_data=(x * 1e30, y))  # finite data whose squared error overflows float32


def test_manual_seed_fixes_the_shuffling_of_fit(backend, rng):
    x, y = regression_data(rng, 40)
    runs = []
    for _ in range(2):
        bp.manual_seed(0)
        model = bp.Sequential(bp.Linear(3, 1, backend=backend))
        runs.append(model.fit(x, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=2, batch_size=8,
                              progress=False)["loss"])
    assert runs[0] == runs[1]


def test_batchnorm2d_takes_a_last_batch_of_one_image_unless_its_maps_are_1x1(backend, rng):
    """BatchNorm2D averages over H and W too, so one image is enough, except on 1x1 maps."""
    with bp.use_backend(backend):
        model = bp.Sequential(bp.Conv2D(1, 2, 3), bp.BatchNorm2D(2), bp.Flatten(), bp.Linear(2 * 2 * 2, 1))
    x = rng.standard_normal((5, 1, 4, 4)).astype(np.float32)
    y = rng.standard_normal((5, 1)).astype(np.float32)
    model.fit(x, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), batch_size=2, progress=False)
    with bp.use_backend(backend):
        one_by_one = bp.Sequential(bp.Conv2D(1, 2, 3), bp.BatchNorm2D(2), bp.Flatten(), bp.Linear(2, 1))
    before = weights(one_by_one)
    with pytest.raises(ValueError, match="last batch of one sample, which BatchNorm2D cannot normalize"):
        one_by_one.fit(x[:, :, :3, :3], y, loss=bp.MSE(), optimizer=bp.SGD(one_by_one.parameters()),
                       batch_size=2, progress=False)
    for k, v in weights(one_by_one).items():  # refused before any update
        np.testing.assert_array_equal(v, before[k])


def test_backward_params_skips_everything_in_front_of_the_first_weights(backend, rng, monkeypatch):
    """An MLP behind a Flatten: its first Linear's input gradient (the largest GEMM) is never computed."""
    with bp.use_backend(backend):
        model = bp.Sequential(bp.Flatten(), bp.Linear(784, 100), bp.ReLU(), bp.Linear(100, 10))
    x = backend.asarray(rng.standard_normal((4, 1, 28, 28)))
    dout = backend.asarray(rng.standard_normal((4, 10)))
    model.forward(x)
    model.backward(dout)
    full = {k: backend.to_numpy(p.grad).copy() for k, p in model.named_parameters().items()}
    shapes = []
    plain = backend.matmul
    monkeypatch.setattr(backend, "matmul", lambda a, b, out=None: shapes.append((a.shape, b.shape)) or plain(a, b, out))
    model.forward(x)
    model.backward_params(dout)
    assert ((4, 100), (100, 784)) not in shapes  # dx of the first Linear
    for k, p in model.named_parameters().items():
        np.testing.assert_allclose(backend.to_numpy(p.grad), full[k], rtol=1e-6, atol=1e-7)


def test_a_custom_composite_layer_gets_its_mode_back_through_its_own_train(backend, rng):
    class Residual(bp.Layer):
        def __init__(self):
            super().__init__(backend)
            self.block = bp.Sequential(bp.Linear(3, 3, backend=backend), bp.Dropout(0.5, backend=backend))

        def train(self, mode=True):
            self.training = mode
            self.block.train(mode)
            return self

        def forward(self, x):
            return x + self.block.forward(x)

    model = bp.Sequential(Residual(), bp.Linear(3, 1, backend=backend))
    model.predict(rng.standard_normal((2, 3)))
    assert model[0].block.training and model[0].block[1].training


def test_fit_draws_its_shuffling_seed_from_a_legacy_style_generator_too(backend, rng, monkeypatch):
    """CuPy's generator is a RandomState (randint, no integers): fit must not need integers()."""
    model = bp.Sequential(bp.Linear(3, 1, backend=backend))
    monkeypatch.setattr(backend, "rng", np.random.RandomState(0))
    model.fit(*regression_data(rng, 16), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), batch_size=4,
              progress=False)


def test_predict_and_evaluate_give_each_layer_its_own_mode_back(backend, rng):
    model = small_cnn(backend)
    model.train()
    model[1].eval()  # a frozen BatchNorm
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    model.predict(x)
    model.evaluate(x, np.array([0, 1, 2, 0]))
    assert model.training and not model[1].training and model[5].training


@pytest.mark.parametrize("y, message", [
    (np.array([[0], [1], [2], [0]]), r"fit neither integer labels \(4,\) nor rows \(4, 3\)"),
    (np.eye(4)[[0, 1, 2, 3]], r"fit neither integer labels"),
    (np.array([0, 1, 12, 0]), r"labels must lie in \[0, 2\], got values in \[0, 12\]"),
])
def test_accuracy_without_a_loss_checks_the_targets(backend, rng, y, message):
    model = small_cnn(backend)
    with pytest.raises(ValueError, match=message):
        model.evaluate(rng.standard_normal((4, 1, 8, 8)).astype(np.float32), y)


def test_metrics_must_be_a_sequence_of_names(backend, rng):
    model = small_cnn(backend)
    with pytest.raises(TypeError, match=r"such as \('accuracy',\)"):
        model.evaluate(rng.standard_normal((4, 1, 8, 8)).astype(np.float32), np.zeros(4, int), metrics="accuracy")


def test_parameter_data_must_have_the_backend_s_dtype(backend):
    with pytest.raises(TypeError, match="parameter data has dtype float64, expected float32"):
        bp.Parameter(backend.xp.zeros((3, 2), dtype=np.float64), backend)


def test_accuracy_counts(backend):
    from backprop.metrics import correct_count
    a = backend.asarray
    probs = a(np.array([[0.9], [0.2], [0.6], [0.4]], np.float32))
    assert correct_count(probs, a(np.array([1, 0, 0, 0]))) == (3, 4)  # (N, 1) against (N,): no broadcasting
    multi = a(np.array([[0.9, 0.2, 0.7], [0.1, 0.8, 0.3]], np.float32))
    assert correct_count(multi, a(np.array([[1, 0, 1], [0, 1, 1]])), threshold=0.5) == (5, 6)  # multi-label
    assert correct_count(multi, a(np.array([0, 0]))) == (1, 2)  # classes by argmax
    with pytest.raises(ValueError, match="do not fit"):
        correct_count(probs, a(np.array([1, 0])))


def test_numpy_scalars_are_accepted_and_keep_float32(backend, rng):
    with bp.use_backend(backend):
        model = bp.Sequential(bp.Conv2D(np.int64(1), 2, np.int64(3)), bp.BatchNorm2D(2, eps=np.float64(1e-5)),
                              bp.Flatten(), bp.Linear(int(np.prod((2, 3, 3))), np.int64(2)))
    opt = bp.SGD(model.parameters(), lr=np.float64(0.1), momentum=np.float64(0.9),
                 weight_decay=np.float64(1e-4))
    model.fit(rng.standard_normal((6, 1, 5, 5)), rng.integers(0, 2, 6), loss=bp.SoftmaxCrossEntropy(),
              optimizer=opt, batch_size=np.int64(3), progress=False)
    assert all(a.dtype == np.float32 for a in model.state_arrays().values())
    assert all(v.dtype == np.float32 for p in model.parameters() for v in p.state.values())


@pytest.mark.parametrize("bad,expected", [
    ("nan_x", r"x holds NaN or Inf \(first at index \(5, 0, 1, 2\)\)"),
    ("labels", r"labels must lie in \[0, 2\]"),
    ("length", "x has 30 samples but y has 29"),
    ("shape", r"Conv2D expected input of shape \(N, 1, \*, \*\)"),
])
def test_fit_rejects_bad_data_before_any_update(backend, rng, bad, expected):
    model = small_cnn(backend)
    x, y = rng.standard_normal((30, 1, 8, 8)), rng.integers(0, 3, 30)
    if bad == "nan_x":
        x[5, 0, 1, 2] = np.nan
    elif bad == "labels":
        y[-1] = 3
    elif bad == "length":
        y = y[:-1]
    else:
        x = x.reshape(30, 8, 8, 1)
    before = weights(model)
    with pytest.raises(ValueError, match=expected):
        model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.SGD(model.parameters()),
                  batch_size=10, progress=False)
    for k, v in weights(model).items():
        np.testing.assert_array_equal(v, before[k])


def bars(rng, n):
    """8x8 images of one bar, horizontal, vertical or diagonal, at a random place, with noise."""
    x = rng.normal(0, 0.3, (n, 1, 8, 8))
    y = rng.integers(0, 3, n)
    for i in range(n):
        r, c = rng.integers(1, 7, 2)
        if y[i] == 0:
            x[i, 0, r, max(0, c - 3):c + 3] += 1.5
        elif y[i] == 1:
            x[i, 0, max(0, r - 3):r + 3, c] += 1.5
        else:
            for k in range(-2, 3):
                if 0 <= r + k < 8 and 0 <= c + k < 8:
                    x[i, 0, r + k, c + k] += 1.5
    return x.astype(np.float32), y


def test_small_cnn_learns_oriented_bars(backend):
    rng = np.random.default_rng(0)
    x, y = bars(rng, 1200)
    x_test, y_test = bars(rng, 300)
    bp.manual_seed(0)
    with bp.use_backend(backend):
        model = bp.Sequential(bp.Conv2D(1, 8, 3, pad=1), bp.ReLU(), bp.MaxPool2D(2), bp.Flatten(),
                              bp.Linear(8 * 4 * 4, 3))
    history = model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.Adam(model.parameters(), lr=3e-3),
                        epochs=6, batch_size=32, seed=0, metrics=["accuracy"],
                        validation_data=(x_test, y_test), progress=False)
    assert history["val_accuracy"][-1] > 0.9, history
    assert model.evaluate(x_test, y_test)["accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert model.predict(x_test).shape == (300, 3)


def test_saving_into_a_missing_folder_names_the_folder_not_a_temporary(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nodir/w.npz: folder .*nodir does not exist") as info:
        bp.Sequential(bp.Linear(2, 2)).save(tmp_path / "nodir" / "w.npz")
    assert ".tmp" not in str(info.value)


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from backprop.checkpoint import atomic_write
    target = tmp_path / "weights.npz"
    target.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["weights.npz"]


def test_backward_params_gives_the_same_parameter_gradients_without_dx(backend, rng):
    model = small_cnn(backend).eval()  # eval: Dropout off, so two passes see the same function
    x = backend.asarray(rng.standard_normal((3, 1, 8, 8)))
    dout = backend.asarray(rng.standard_normal((3, 3)))
    model.forward(x)
    assert model.backward(dout) is not None
    full = {k: backend.to_numpy(p.grad).copy() for k, p in model.named_parameters().items()}
    for p in model.parameters():
        p.grad[...] = 0
    model.forward(x)
    assert model.backward_params(dout) is None
    for k, p in model.named_parameters().items():
        np.testing.assert_allclose(backend.to_numpy(p.grad), full[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (3, 2, 1), ((2, 3), (1, 2), 0), (3, 1, 1)])
def test_relu_maxpool_layer_is_relu_then_maxpool(backend64, rng, kernel, stride, pad):
    """ReLUMaxPool2D gives the outputs and input gradients of ReLU then MaxPool2D: padding, overlapping
    windows, ties, zeros, -inf, a plane with no positive value and a NaN first in its windows (a NaN
    after a positive value is the one case where they differ: see Backend.maxpool2d_relu_backward)."""
    b = backend64
    host_x = rng.integers(-2, 3, (2, 3, 7, 8)).astype(np.float64)
    host_x[0, 0, 0, 0], host_x[1, 2, 3, 3], host_x[1, 1] = np.nan, -np.inf, -1.0
    x = b.asarray(host_x)
    fused = bp.ReLUMaxPool2D(kernel, stride, pad, backend=b)
    relu, pool = bp.ReLU(backend=b), bp.MaxPool2D(kernel, stride, pad, backend=b)
    y = fused.forward(x)
    np.testing.assert_array_equal(b.to_numpy(y), b.to_numpy(pool.forward(relu.forward(x))))
    d = b.asarray(rng.standard_normal(y.shape))
    np.testing.assert_array_equal(b.to_numpy(fused.backward(d)), b.to_numpy(relu.backward(pool.backward(d))))


def relu_pool_cnn(b, fused):
    """A small CNN whose ReLU-then-pooling pairs are ReLUMaxPool2D layers (fused) or two layers each."""
    def relu_pool(*args):
        return [bp.ReLUMaxPool2D(*args)] if fused else [bp.ReLU(), bp.MaxPool2D(*args)]
    bp.manual_seed(0)
    with bp.use_backend(b):
        return bp.Sequential(bp.Conv2D(2, 3, 3), *relu_pool(2), bp.Conv2D(3, 4, 2), *relu_pool(2, 1),
                             bp.Flatten(), bp.Linear(4 * 2 * 2, 5))


def test_a_model_with_the_fused_layer_is_the_model_with_relu_then_pooling(backend64, rng):
    """Same weights (the fused layer counts as a ReLU for He init), outputs, input gradient and
    parameter gradients, through backward and backward_params."""
    b = backend64
    fused, plain = relu_pool_cnn(b, fused=True), relu_pool_cnn(b, fused=False)
    assert len(fused) == len(plain) - 2
    x = b.asarray(rng.standard_normal((2, 2, 10, 10)))
    d = b.asarray(rng.standard_normal((2, 5)))
    for p, q in zip(fused.parameters(), plain.parameters(), strict=True):
        np.testing.assert_array_equal(b.to_numpy(p.data), b.to_numpy(q.data))
    np.testing.assert_array_equal(b.to_numpy(fused.forward(x)), b.to_numpy(plain.forward(x)))
    np.testing.assert_array_equal(b.to_numpy(fused.backward(d)), b.to_numpy(plain.backward(d)))
    for p, q in zip(fused.parameters(), plain.parameters(), strict=True):
        np.testing.assert_array_equal(b.to_numpy(p.grad), b.to_numpy(q.grad))
        p.grad[...], q.grad[...] = 0, 0
    fused.forward(x), plain.forward(x)
    fused.backward_params(d), plain.backward_params(d)
    for p, q in zip(fused.parameters(), plain.parameters(), strict=True):
        np.testing.assert_array_equal(b.to_numpy(p.grad), b.to_numpy(q.grad))


def test_training_a_model_that_starts_with_the_fused_layer(backend64, rng):
    """backward_params skips the fused layer in front of the first weights; the parameter gradients
    are those of the full backward."""
    b = backend64
    model = bp.Sequential(bp.ReLUMaxPool2D(2, backend=b), bp.Flatten(backend=b), bp.Linear(2 * 2 * 2, 3, backend=b))
    x = b.asarray(rng.standard_normal((2, 2, 4, 4)))
    d = b.asarray(rng.standard_normal((2, 3)))
    model.forward(x)
    model.backward(d)
    full = {k: b.to_numpy(p.grad).copy() for k, p in model.named_parameters().items()}
    model.forward(x)
    model.backward_params(d)
    for k, p in model.named_parameters().items():
        np.testing.assert_array_equal(b.to_numpy(p.grad), full[k], err_msg=k)
