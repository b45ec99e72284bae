"""fit's callbacks: the hooks and their order, early stopping, Ctrl-C, metric files, and what the loop
restores when training diverges."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import time

import numpy as np
import pytest

import backprop as bp
from backprop import training
from backprop.callbacks import Callback, EarlyStopping, EpochLine, MetricsFiles, ProgressBar, StopOnInterrupt


def _data(rng, n=40):
    x = rng.standard_normal((n, 3))
    return x, (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3)


def _model(backend):
    return bp.Sequential(bp.Linear(3, 4, backend=backend), bp.Tanh(backend=backend), bp.Linear(4, 1, backend=backend))


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, loop):
        self.calls.append("train_begin")

    def on_epoch_begin(self, loop):
        self.calls.append(f"epoch_begin {loop.epoch + 1}")

    def on_batch_begin(self, loop):
        self.calls.append("batch_begin")

    def on_batch_end(self, loop):
        self.calls.append(f"batch_end {loop.batch}")

    def on_report(self, loop, logs):
        self.calls.append("report")
        assert np.isfinite(logs["loss"])

    def on_epoch_end(self, loop, logs):
        self.calls.append(f"epoch_end {loop.epoch} {sorted(logs)}")

    def on_train_end(self, loop):
        self.calls.append("train_end")


def test_hooks_are_called_in_order(backend, rng):
    model, rec = _model(backend), Recorder()
    model.fit(*_data(rng, 20), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=2, batch_size=10,
              validation_data=_data(rng, 8), callbacks=[rec], progress=False, report_interval=1e9)
    logs = "['eval_seconds', 'images_per_s', 'loss', 'lr', 'seconds', 'val_loss', 'warmup_seconds']"
    epoch = ["batch_begin", "batch_end 1", "batch_begin", "batch_end 2", "report"]
    assert rec.calls == ["train_begin", "epoch_begin 1", *epoch, f"epoch_end 1 {logs}",
                         "epoch_begin 2", *epoch, f"epoch_end 2 {logs}", "train_end"]


class Records(Callback):
    def __init__(self):
        self.records = []

    def on_epoch_end(self, loop, logs):
        self.records.append(logs)


@pytest.fixture
def slow_steps(monkeypatch):
    """Steps that take measurable time: 0.3 s for the first (as if it compiled), 0.02 s for the others."""
    step, calls = training.train_step, []

    def slow_step(*args):
        calls.append(1)
        time.sleep(0.3 if len(calls) == 1 else 0.02)
        return step(*args)

    monkeypatch.setattr(training, "train_step", slow_step)


def test_the_first_step_is_timed_apart(rng, slow_steps):
    """The run's warm-up, its first step where Numba and the GPU compile, is kept out of images/s and named
    in the line."""
    model, records, lines = _model("numpy"), Records(), []
    model.fit(*_data(rng, 20), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=2, batch_size=5,
              callbacks=[records, EpochLine(lines.append)], progress=False)
    first, second = records.records
    assert 0.3 <= first["warmup_seconds"] < first["seconds"] and second["warmup_seconds"] == 0
    rest = 15 / (first["seconds"] - first["warmup_seconds"])  # the other three batches of 5 images
    assert first["images_per_s"] == pytest.approx(rest, rel=0.05) and rest > 2 * 20 / first["seconds"]
    assert second["images_per_s"] == pytest.approx(20 / second["seconds"], rel=0.05)
    assert "not counting the warm-up: 0.3" in lines[0] and "warm-up" not in lines[1]


def test_an_epoch_of_one_step_counts_it(rng, slow_steps):
    model, records = _model("numpy"), Records()
    model.fit(*_data(rng, 5), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), batch_size=5,
              callbacks=[records], progress=False)
    (only,) = records.records
    assert only["warmup_seconds"] == 0 and only["images_per_s"] == pytest.approx(5 / only["seconds"], rel=0.01)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _progress(rng, stream, interval):
    model = _model("numpy")
    model.fit(*_data(rng, 20), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=2, batch_size=5,
              callbacks=[ProgressBar(stream, interval)], progress=False, report_interval=0.0)
    return stream.getvalue()


def test_progress_outside_a_terminal_is_plain_lines(rng):
    """To a file or a pipe: one plain line per due reporting point (here every batch), no carriage returns."""
    out = _progress(rng, io.StringIO(), interval=0.0)
    assert "\r" not in out
    lines = out.splitlines()
    want = [f"epoch {e}/2  batch {b}/4  loss " for e in (1, 2) for b in (1, 2, 3, 4, 4)]  # and the epoch's end
    assert [line[:len(w)] for line, w in zip(lines, want, strict=True)] == want
    assert all(re.fullmatch(r".*loss \d+\.\d{4}", line) for line in lines)
    assert _progress(rng, io.StringIO(), interval=1e9) == ""  # no line is due within a run this short


def test_progress_on_a_terminal_is_a_bar(rng):
    out = _progress(rng, Terminal(), interval=0.0)
    assert "\r" in out and "epoch 2/2" in out and "batch " not in out


def test_a_callback_can_stop_training_and_only_callbacks_are_accepted(backend, rng):
    class StopAfterThreeBatches(Callback):
        def on_batch_end(self, loop):
            if loop.epoch == 1 and loop.batch == 1:
                loop.stop_training = True

    model = _model(backend)
    history = model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=5, batch_size=20,
                        callbacks=[StopAfterThreeBatches()], progress=False)
    assert len(history["loss"]) == 1  # epoch 2 stopped after its first batch: no record for it
    with pytest.raises(TypeError, match="callbacks must be Callback instances"):
        model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), callbacks=[print],
                  progress=False)


@pytest.mark.parametrize("restore", [False, True])
def test_early_stopping(backend, rng, restore):
    """Validation data the model cannot fit (targets with the opposite sign) stop training early; with
    restore_best_weights the best epoch's weights come back."""
    x, y = _data(rng)
    model = _model(backend)
    best = {}

    class KeepBest(Callback):
        def on_epoch_end(self, loop, logs):
            if logs["val_loss"] <= min(loop.history[i]["val_loss"] for i in range(len(loop.history))):
                best.update(model.state_dict())

    stop = EarlyStopping(patience=2, restore_best_weights=restore)
    history = model.fit(x, y, loss=bp.MSE(), optimizer=bp.Adam(model.parameters(), lr=0.05), epochs=50,
                        batch_size=8, validation_data=(x, -y), callbacks=[KeepBest(), stop], progress=False)
    n = len(history["val_loss"])
    assert n < 50 and stop.best_epoch == int(np.argmin(history["val_loss"])) + 1 == n - 3
    now = model.state_dict()
    same = all(np.array_equal(now[k], best[k]) for k in now)
    assert same == restore


def test_early_stopping_names_a_missing_key(backend, rng):
    model = _model(backend)
    with pytest.raises(KeyError, match="monitors 'val_loss'.*pass validation_data"):
        model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), callbacks=[EarlyStopping()],
                  progress=False)
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


def test_ctrl_c_stops_fit_after_the_batch(backend, rng):
    class CtrlC(Callback):
        def on_batch_end(self, loop):
            if loop.epoch == 0 and loop.batch == 2:
                signal.raise_signal(signal.SIGINT)

    model, stop = _model(backend), StopOnInterrupt(say=lambda line: None)
    history = model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=3, batch_size=5,
                        callbacks=[stop, CtrlC()], progress=False)
    assert stop.interrupted and history["loss"] == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_metrics_files(backend, rng, tmp_path):
    model = _model(backend)
    model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=2, batch_size=10,
              validation_data=_data(rng, 10), callbacks=[MetricsFiles(tmp_path)], progress=False)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    records = json.loads((tmp_path / "metrics.json").read_text())
    assert [int(r["epoch"]) for r in rows] == [1, 2] == [r["epoch"] for r in records]
    assert float(rows[1]["val_loss"]) == pytest.approx(records[1]["val_loss"])


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_divergence_restores_weights_and_optimizer_state_of_the_last_reporting_point(backend, rng):
    class Poison(Callback):
        def on_report(self, loop, logs):
            self.at = (loop.epoch, loop.batch)
            self.saved = {k: v.copy() for k, v in model.state_dict().items()}
            self.steps = loop.optimizer.steps
            self.state = [{k: backend.to_numpy(v).copy() for k, v in p.state.items()} for p in loop.optimizer.params]

        def on_batch_end(self, loop):
            if loop.epoch == 1 and loop.batch == 3:
                model.parameters()[0].data[...] = np.inf

    model, poison = _model(backend), Poison()
    opt = bp.Adam(model.parameters())
    with pytest.raises(bp.TrainingDivergedError, match=r"at or before epoch 2, batch 3.*of epoch 2, batch 2"):
        model.fit(*_data(rng), loss=bp.MSE(), optimizer=opt, epochs=3, batch_size=5, callbacks=[poison],
                  progress=False, report_interval=0.0)
    assert poison.at == (1, 2)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, poison.saved[k])
    assert opt.steps == poison.steps
    for p, saved in zip(opt.params, poison.state, strict=True):
        for k, v in saved.items():
            np.testing.assert_array_equal(backend.to_numpy(p.state[k]), v)


def test_fit_refuses_an_optimizer_of_another_model(backend, rng):
    model, other = _model(backend), _model(backend)
    with pytest.raises(ValueError, match="holds none of this model's parameters"):
        model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.SGD(other.parameters()), progress=False)


def test_fit_takes_a_data_loader_and_data_already_on_the_backend(backend, rng):
    x, y = _data(rng)
    model = _model(backend)
    loader = bp.DataLoader(x, y, batch_size=8, seed=0, backend=backend, resident=True)
    h1 = model.fit(loader, loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=2, progress=False)
    xd, yd = backend.asarray(x), backend.asarray(y)
    h2 = model.fit(xd, yd, loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), epochs=1, batch_size=8,
                   progress=False)
    assert len(h1["loss"]) == 2 and len(h2["loss"]) == 1
    with pytest.raises(ValueError, match="targets inside the DataLoader"):
        model.fit(loader, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), progress=False)


def test_evaluate_gives_a_confusion_matrix(backend, rng):
    model = bp.Sequential(bp.Linear(3, 4, backend=backend))
    x, y = rng.standard_normal((30, 3)), rng.integers(0, 4, 30)
    scores = model.evaluate(x, y, loss=bp.SoftmaxCrossEntropy(), confusion=True, batch_size=7)
    pred = model.predict(x).argmax(axis=1)
    expected = np.zeros((4, 4), dtype=np.int64)
    np.add.at(expected, (y, pred), 1)
    np.testing.assert_array_equal(scores["confusion"], expected)
    assert scores["accuracy"] == pytest.approx(np.trace(expected) / 30)


def test_fit_trains_a_single_layer_too(backend, rng):
    layer = bp.Linear(3, 1, backend=backend)
    history = bp.training.fit(layer, *_data(rng), loss=bp.MSE(), optimizer=bp.SGD(layer.parameters(), lr=0.05),
                              epochs=30, batch_size=8, progress=False)
    assert history["loss"][-1] < 0.01 < history["loss"][0]


def test_a_non_finite_optimizer_state_is_divergence_too_and_the_loop_position_goes_back(backend, rng):
    """Weights and loss stay finite while AdaGrad's running square overflows: caught at the next report,
    and the loop's position (batch, seen, sums) returns to the last good report with the weights."""
    class OverflowState(Callback):
        def on_batch_end(self, loop):
            if loop.epoch == 0 and loop.batch == 3:
                loop.optimizer.params[0].state["sum_sq"][...] = np.inf

    model = _model(backend)
    state = bp.training.TrainingState()
    with pytest.raises(bp.TrainingDivergedError, match="optimizer's state became NaN or Inf at or before epoch 1, "
                                                       "batch 3.*of epoch 1, batch 2"):
        model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.AdaGrad(model.parameters()), epochs=2, batch_size=5,
                  callbacks=[OverflowState()], progress=False, report_interval=0.0, state=state)
    assert (state.epoch, state.batch, state.seen) == (0, 2, 10) and np.isfinite(state.loss_sum)


def test_a_callback_failing_at_the_start_still_ends_training(backend, rng):
    class Broken(Callback):
        def on_train_begin(self, loop):
            raise RuntimeError("broken callback")

    ends = []

    class End(Callback):
        def on_train_end(self, loop):
            ends.append(loop.error)

    model = _model(backend)
    with pytest.raises(RuntimeError, match="broken callback"):
        model.fit(*_data(rng), loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), progress=False,
                  callbacks=[StopOnInterrupt(say=lambda line: None), Broken(), End()])
    assert len(ends) == 1 and isinstance(ends[0], RuntimeError)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_evaluate_counts_the_samples_it_saw_and_a_loader_without_batches_is_refused(backend, rng):
    x, y = _data(rng, 25)
    model = _model(backend)
    loader = bp.DataLoader(x, y, batch_size=10, shuffle=False, drop_last=True, backend=backend)
    expected = float(np.mean((model.predict(x[:20]) - y[:20]) ** 2))
    assert model.evaluate(loader, loss=bp.MSE())["loss"] == pytest.approx(expected, rel=1e-5)
    empty = bp.DataLoader(x, y, batch_size=30, drop_last=True, backend=backend)
    with pytest.raises(ValueError, match="give no batch"):
        model.fit(empty, loss=bp.MSE(), optimizer=bp.SGD(model.parameters()), progress=False)


def test_the_confusion_matrix_takes_narrow_labels_and_many_classes(backend, rng):
    model = bp.Sequential(bp.Linear(3, 20, backend=backend))
    x, y = rng.standard_normal((60, 3)), rng.integers(0, 20, 60).astype(np.uint8)
    matrix = model.evaluate(x, y, confusion=True)["confusion"]
    expected = np.zeros((20, 20), dtype=np.int64)
    np.add.at(expected, (y, model.predict(x).argmax(axis=1)), 1)
    np.testing.assert_array_equal(matrix, expected)

