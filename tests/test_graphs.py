"""CUDA-graph training (backprop.graphs, fit(cuda_graph=True)): a replayed step trains exactly as the
eager one, and what a graph cannot replay is refused. On a machine without a GPU these run on the
emulated device, whose capture records launches without running them and refuses host reads,
allocations outside the graph's pool and pageable copies, as CUDA does (tests/cuda_harness)."""

from __future__ import annotations

import numpy as np
import pytest

from backprop import manual_seed, zoo
from backprop.callbacks import Callback
from backprop.layers import Dropout, Linear, ReLU
from backprop.losses import SoftmaxCrossEntropy
from backprop.model import Sequential
from backprop.optim import SGD, Adam
from backprop.schedules import StepLR
from backprop.training import fit


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
def test_a_replayed_step_trains_exactly_as_the_eager_one(emulated_cupy, optimizer):
    eager_history, eager_weights, eager_opt, no_graph = _train(emulated_cupy, False, optimizer)
    history, weights, opt, graph = _train(emulated_cupy, True, optimizer)
    assert no_graph is None
    # 4 full batches and a partial one per epoch: 3 eager warm-up steps, the capture, then replays
    assert graph.replays == 2 * 4 - 3 and graph.eager_steps == 3 + 2
    assert opt.steps == eager_opt.steps == 10 and opt.lr == eager_opt.lr == 2e-3 * 0.5 ** 2 * (
        1 if optimizer == "adam" else 0.05 / 2e-3)
    assert history == eager_history
    for got, want in zip(weights, eager_weights, strict=True):
        np.testing.assert_array_equal(got, want)


def test_cuda_graphs_are_refused_where_they_cannot_replay(emulated_cupy):
    x, y = _images(20)
    numpy_model = zoo.simple_conv_net(backend="numpy")
    with pytest.raises(ValueError, match="CUDA graphs need the cupy backend; this model is on 'numpy'"):
        fit(numpy_model, x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(
            numpy_model.parameters()), batch_size=10, progress=False, cuda_graph=True)
    b = emulated_cupy
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
