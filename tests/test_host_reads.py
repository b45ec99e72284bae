"""A training step reads nothing back to the host: proved on the CPU with a backend whose arrays count
(and can refuse) every host read (``tests/host_reads.py``), for ``fit`` and for one CLI epoch."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp
from backprop import training
from backprop.callbacks import Callback
from host_reads import GuardedBackend, HostReadError, Reads


@pytest.fixture
def guarded():
    return GuardedBackend(np.float32, seed=0)


class RefuseReadsInSteps(Callback):
    """Refuses host reads from the start of each step to its end (the metric sums included)."""

    def __init__(self) -> None:
        self.steps = 0

    def on_batch_begin(self, loop):
        Reads.refused = True

    def on_batch_end(self, loop):
        Reads.refused = False
        self.steps += 1

    def on_train_end(self, loop):
        Reads.refused = False


def _cnn(backend):
    return bp.Sequential(bp.Conv2D(1, 4, 3, pad=1, backend=backend), bp.ReLU(backend=backend),
                         bp.MaxPool2D(2, backend=backend), bp.Flatten(backend=backend),
                         bp.Dropout(0.2, backend=backend), bp.Linear(4 * 4 * 4, 3, backend=backend))


def _fit(backend, n, sgd=False, **kwargs):
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 1, 8, 8)), rng.integers(0, 3, n)
    model = _cnn(backend)
    optimizer = bp.SGD(model.parameters()) if sgd else bp.Adam(model.parameters(), clip_norm=1.0)
    return model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=optimizer,
                     batch_size=10, metrics=["accuracy"], validation_data=(x[:20], y[:20]), progress=False,
                     **kwargs)


def test_the_guard_sees_reads(guarded):
    a = guarded.asarray(np.arange(4.0))
    before = Reads.count
    float(a.sum()), bool((a > 1).any()), a.max().item(), guarded.to_numpy(a)
    assert Reads.count == before + 4
    with Reads.refusing(), pytest.raises(HostReadError):
        int(a.argmax())
    for sized_by_values in (lambda: a[a > 1], lambda: guarded.xp.nonzero(a), lambda: guarded.xp.unique(a)):
        with Reads.refusing(), pytest.raises(HostReadError):
            sized_by_values()
    before = Reads.count
    float(guarded.xp.linalg.norm(a)), [float(v) for v in a]  # submodules and iteration hand out guarded arrays
    assert Reads.count == before + 1 + len(a)


def test_fit_makes_no_host_read_inside_a_step(guarded):
    strict = RefuseReadsInSteps()
    history = _fit(guarded, 40, epochs=2, callbacks=[strict], report_interval=0.0)  # a report after every step
    assert strict.steps == 8 and len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()


@pytest.mark.parametrize("sgd", [False, True])
def test_fit_reads_the_host_only_at_reporting_points(guarded, monkeypatch, sgd):
    """With reports at epoch ends only, 20 batches read the host as often as 2 do: no read per step."""
    monkeypatch.setattr(training, "REPORT_INTERVAL", 1e9)
    counts = []
    for n in (20, 200):
        before = Reads.count
        _fit(guarded, n, sgd, epochs=2)
        counts.append(Reads.count - before)
    assert counts[0] == counts[1], counts


def test_one_cli_epoch_reads_the_host_only_at_reporting_points(guarded, tmp_path, monkeypatch):
    from backprop import runs

    monkeypatch.setattr(training, "REPORT_INTERVAL", 1e9)
    monkeypatch.setattr(runs, "get_backend", lambda name, dtype: guarded)
    monkeypatch.delenv("BACKPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    counts = []
    for n in (100, 400):  # 2 and 8 batches
        config = runs.RunConfig(model="mlp", backend="numpy", epochs=1, batch_size=50, train_limit=n, test_limit=100)
        before = Reads.count
        history = runs.train(config, tmp_path / f"run{n}", progress=True, say=lambda line: None)
        counts.append(Reads.count - before)
        assert len(history) == 1
    assert counts[0] == counts[1], counts
