"""CUDA-graph training (backprop.graphs, fit(cuda_graph=True)): a replayed step trains exactly as the
eager one, and what a graph cannot replay is refused. On a machine without a GPU these run on the
emulated device, whose capture records launches without running them and refuses host reads,
allocations outside the graph's pool and pageable copies, as CUDA does (tests/cuda_harness)."""

from __future__ import annotations

import numpy as np
import pytest

from backprop import manual_seed, zoo
from backprop.callbacks import Callback
from backprop.graphs import CudaGraphStep
from backprop.layers import Dropout, Linear, ReLU
from backprop.losses import SoftmaxCrossEntropy, targets_checked
from backprop.model import Sequential
from backprop.optim import SGD, Adam
from backprop.schedules import StepLR
from backprop.training import device_step, fit
from cuda_harness.emulated import EmulatedCupy


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _train(backend, cuda_graph: bool, optimizer: str = "adam"):
    """Two epochs of SimpleConvNet on 90 images in batches of 20 (the last batch of 10 runs eagerly),
    with a learning rate that changes after the first epoch: a baked-in rate or Adam step would show."""
    manual_seed(3)
    model = zoo.simple_conv_net(backend=backend)
    params = model.parameters()
    opt = Adam(params, lr=2e-3) if optimizer == "adam" else SGD(params, lr=0.05, momentum=0.9)
    x, y = _images(90)
    seen = []
    record = Callback()
    record.on_train_end = lambda loop: seen.append(loop.graph)  # type: ignore[method-assign]
    history = fit(model, backend.asarray(x), backend.asarray(y), loss=SoftmaxCrossEntropy(),
                     optimizer=opt, epochs=2, batch_size=20, seed=5, scheduler=StepLR(opt, step_size=1, gamma=0.5),
                     metrics=["accuracy"], validation_data=(x[:30], y[:30]), progress=False,
                     callbacks=[record], cuda_graph=cuda_graph)
    weights = [backend.to_numpy(p.data) for p in model.parameters()]
    return history, weights, opt, seen[0]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_replayed_step_trains_exactly_as_the_eager_one(cupy_anywhere, optimizer):
    eager_history, eager_weights, eager_opt, no_graph = _train(cupy_anywhere, False, optimizer)
    history, weights, opt, graph = _train(cupy_anywhere, True, optimizer)
    assert no_graph is None
    # 4 full batches and a partial one per epoch: 3 eager warm-up steps, the capture, then replays
    assert graph.replays == 2 * 4 - 3 and graph.eager_steps == 3 + 2
    assert opt.steps == eager_opt.steps == 10 and opt.lr == eager_opt.lr == 2e-3 * 0.5 ** 2 * (
        1 if optimizer == "adam" else 0.05 / 2e-3)
    # Bit for bit on the emulated device; on a GPU, cuBLAS promises bit-equal results on one stream only,
    # and the graph runs on its own.
    tolerance = 0.0 if isinstance(cupy_anywhere.xp, EmulatedCupy) else 1e-5
    for key, values in eager_history.items():
        np.testing.assert_allclose(history[key], values, rtol=tolerance, atol=0, err_msg=key)
    for got, want in zip(weights, eager_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)


def test_the_graph_is_of_a_full_batch_whatever_comes_first(cupy_anywhere):
    """A run resumed at its last, partial batch still captures the full batches that follow; the
    partial one runs eagerly, and the warm-up ends after the capture."""
    b = cupy_anywhere
    manual_seed(0)
    model = zoo.mlp(backend=b)
    optimizer = SGD(model.parameters(), lr=0.1)
    loss = SoftmaxCrossEntropy().to(b)
    step = CudaGraphStep(device_step, model, loss, optimizer, batch_size=20, warmup=1)
    x, y = _images(50)
    with targets_checked(loss), step.running():  # (a label check inside the step would read the host)
        for lo, hi in ((0, 10), (10, 30), (30, 50), (0, 20)):  # partial, then full batches
            assert step.warming_up == (step.graph is None)
            step(b.asarray(x[lo:hi]), b.asarray(y[lo:hi]))
    assert step.graph is not None and step._key[0] == (20, 1, 28, 28)
    assert (step.eager_steps, step.replays) == (1, 3) and not step.warming_up


def test_cuda_graphs_are_refused_where_they_cannot_replay(cupy_anywhere):
    x, y = _images(20)
    numpy_model = zoo.simple_conv_net(backend="numpy")
    with pytest.raises(ValueError, match="CUDA graphs need the cupy backend; this model is on 'numpy'"):
        fit(numpy_model, x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(
            numpy_model.parameters()), batch_size=10, progress=False, cuda_graph=True)
    b = cupy_anywhere
    dropout = Sequential(Linear(784, 10, backend=b), ReLU(backend=b), Dropout(0.5, backend=b))
    with pytest.raises(ValueError, match="Dropout draws new random numbers every step"):
        fit(dropout, b.asarray(x.reshape(20, -1)), b.asarray(y), loss=SoftmaxCrossEntropy(),
               optimizer=SGD(dropout.parameters()), batch_size=10, progress=False, cuda_graph=True)


def test_the_cli_refuses_cuda_graph_on_the_cpu(tmp_path, capsys):
    from backprop.cli import main

    status = main(["train", "--model", "mlp", "--backend", "numpy", "--epochs", "1", "--train-limit", "100",
                   "--test-limit", "50", "--no-progress", "--cuda-graph", "--run-dir", str(tmp_path / "run")])
    assert status != 0
    assert "--cuda-graph: CUDA graphs need the cupy backend" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
