"""Data-parallel training (backprop.distributed): the sharding and checks in one process, and real
2-rank jobs launched by the tests through the ``[mpi]`` extra's ``mpiexec`` (tests/mpi_program.py):
2 ranks train the weights of 1, a resumed 2-rank run equals an uninterrupted one, a failure on one
rank ends the job at once with its message shown once. The NCCL path is a GPU test."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import backprop as bp
from backprop import distributed
from backprop.backends import available_backends
from backprop.checkpoint import load_arrays
from backprop.data.loader import DataLoader
from test_cli import SMALL, assert_same_state

PROGRAM = str(Path(__file__).with_name("mpi_program.py"))
CPU_BACKENDS = ["numpy", "numba"]
TIMEOUT = 180  # seconds a job may take before the test fails (the CLI jobs take a few)


def _mpiexec() -> str | None:
    """The extra's mpiexec (beside this Python), else one on PATH; None without mpi4py."""
    if importlib.util.find_spec("mpi4py") is None:
        return None
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="MPI not installed: pip install 'backprop[mpi]'")


def _env() -> dict[str, str]:
    """One BLAS thread per rank (two ranks share the CI machine's two cores), the tests' helpers importable."""
    paths = [str(Path(__file__).parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}  # (no empty entry: the current folder)
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "BACKPROP_DATA"):
        env.pop(name, None)  # the tests' own process may itself run under a launcher; runs use the embedded subset
    return env


def run(ranks: int, *args: str, cwd: Path | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python tests/mpi_program.py ARGS`` as ``ranks`` processes (1: no mpiexec)."""
    launcher = [MPIEXEC, "-n", str(ranks)] if ranks > 1 else []
    env = _env() if cwd is None else {**_env(), "XDG_CACHE_HOME": str(cwd / "cache")}  # no dataset cached
    return subprocess.run([*launcher, sys.executable, PROGRAM, *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)  # type: ignore[list-item]


def _skip_unavailable(name: str) -> None:
    if available_backends()[name] is not None:
        pytest.skip(f"backend {name!r} unavailable: {available_backends()[name]}")


# -- in one process ---------------------------------------------------------------------------------
def test_a_plain_run_is_one_rank_without_mpi(monkeypatch, tmp_path):
    for name in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launch() == (0, 1)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert distributed.launch() == (3, 4)
    comm = distributed.Communicator()
    assert (comm.rank, comm.size) == (0, 1) and comm.any(True, False) == (True, False)
    plain = subprocess.run([sys.executable, "-c", "import sys, backprop; comm = backprop.distributed.init(); "
                            "print(comm.size, 'mpi4py' in sys.modules)"], capture_output=True, text=True,
                           env=_env(), cwd=tmp_path, timeout=60)  # (a neutral folder: the installed backprop)
    assert plain.stdout.split() == ["1", "False"], plain.stderr
    np.testing.assert_array_equal(comm.sum(np.array([1.5, 2.0])), [1.5, 2.0])


@pytest.mark.parametrize("n, size", [(100, 2), (33, 2), (7, 3), (2, 4)])
def test_the_parts_of_a_batch_cover_it_once(n, size):
    parts = [distributed.part(n, r, size) for r in range(size)]
    assert [i for p in parts for i in range(n)[p]] == list(range(n))
    assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_each_rank_gets_its_part_of_one_global_order():
    x = np.arange(250).reshape(250, 1).astype(np.float32)
    loaders = [DataLoader(x, batch_size=100, seed=5) for _ in range(2)]
    orders = [loader.order() for loader in loaders]
    np.testing.assert_array_equal(orders[0], orders[1])
    parts = [[xb[:, 0] for xb, _ in loader.batches(order, shard=(r, 2))] for r, (loader, order)
             in enumerate(zip(loaders, orders, strict=True))]
    assert [len(b) for b in parts[0]] == [50, 50, 25] and [len(b) for b in parts[1]] == [50, 50, 25]
    for i, whole in enumerate(DataLoader(x, batch_size=100, seed=5).batches(orders[0])):
        np.testing.assert_array_equal(np.concatenate([parts[0][i], parts[1][i]]), whole[0][:, 0])


@pytest.mark.parametrize("n, batch, size, message", [
    (1000, 100, 3, "the global batch size 100 does not divide over 3 ranks"),
    (1001, 100, 2, "holds 1, fewer than the 2 ranks"),
])
def test_batches_the_ranks_cannot_share_are_refused(n, batch, size, message):
    with pytest.raises(ValueError, match=message):
        distributed.check_shares(size, n, batch)


class TwoRanks(distributed.Communicator):
    """Rank 0 of a world of two whose collectives must not be reached: the checks before them refuse."""

    size = 2

    def broadcast_json(self, value):
        raise AssertionError("reached a collective")


@pytest.mark.parametrize("batch, message", [(3, "the global batch size 3 does not divide over 2 ranks"),
                                            (2, "100 samples in batches of 2 over 2 ranks leave a part of one "
                                                "sample, which BatchNorm1D cannot normalize")])
def test_fit_refuses_batches_the_ranks_cannot_share_before_any_collective(backend, batch, message):
    model = bp.Sequential(bp.Linear(4, 8, backend=backend), bp.BatchNorm1D(8, backend=backend),
                          bp.Linear(8, 2, backend=backend))
    x, y = np.random.default_rng(0).random((100, 4)), np.arange(100) % 2
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.SGD(model.parameters()), batch_size=batch,
                  progress=False, comm=TwoRanks())


def test_gradients_live_in_one_buffer_and_are_weighted(backend, rng):
    model = bp.zoo.mlp(backend=backend)
    params = model.parameters()
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad[...] = backend.asarray(g)
    averager = distributed.GradientAverager(distributed.Communicator(), params)
    assert len(averager.buffers) == 1 and averager.nbytes == sum(p.data.nbytes for p in params)
    np.testing.assert_array_equal(backend.to_numpy(averager.buffers[0]), np.concatenate([g.ravel() for g in grads]))
    averager.average(0.5)  # one rank: its gradients times its share, seen through every p.grad
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p.grad), g * np.float32(0.5))


def test_info_shows_mpi_and_nccl(capsys):
    from backprop.cli import main
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "MPI: " in out and "NCCL: " in out and "this process: rank 0 of 1" in out


# -- 2-rank jobs --------------------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_two_ranks_train_the_weights_of_one(tmp_path, backend_name):
    """20 steps of Adam, global batch 100: 2 ranks of 50 give one rank's weights up to float32 rounding,
    and the same weights on both ranks, bit for bit."""
    _skip_unavailable(backend_name)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = run(1, "fit", backend_name, str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = run(2, "fit", backend_name, str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    single, _ = load_arrays(tmp_path / "one" / "rank-0.npz")
    rank0, _ = load_arrays(tmp_path / "two" / "rank-0.npz")
    rank1, _ = load_arrays(tmp_path / "two" / "rank-1.npz")
    bp.manual_seed(0)
    initial = bp.zoo.simple_conv_net().state_dict()
    for name in single:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)
        np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=1e-5, err_msg=name)
        assert not np.allclose(single[name], initial[name], rtol=0, atol=1e-4), f"{name} did not train"
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "two"))
    assert h1.keys() == h2.keys() == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key in h1:
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-4, err_msg=key)


def _cli(ranks: int, tmp_path: Path, *argv: str, fault: tuple[int, int, str] = (-1, 0, "")):
    """``backprop ARGV`` as ``ranks`` processes in ``tmp_path``, with ``fault`` (rank, step, kind)."""
    env_args = [str(v) for v in fault]
    return run(ranks, "cli", *env_args, *argv, cwd=tmp_path)


@needs_mpi
def test_resume_under_two_ranks_equals_an_uninterrupted_run(tmp_path):
    """Stopped at an epoch's end, and by Ctrl-C on rank 1 alone mid-epoch: rank 0 saves once, and every
    rank resumes from the run folder."""
    common = ["--seed", "3", *SMALL, "--batch-size", "50"]
    for argv in (["train", "--epochs", "2", "--run-dir", "straight", *common],
                 ["train", "--epochs", "1", "--run-dir", "split", *common],
                 ["train", "--resume", "split", "--epochs", "2", "--no-progress"]):
        done = _cli(2, tmp_path, *argv)
        assert done.returncode == 0, done.stderr
    assert_same_state(tmp_path / "straight", tmp_path / "split")
    cut = _cli(2, tmp_path, "train", "--epochs", "2", "--run-dir", "cut", *common, fault=(1, 8, "sigint"))
    assert cut.returncode == 130, cut.stderr
    assert cut.stdout.count("stopped in epoch 2 after batch 2/6") == 1, cut.stdout
    assert load_arrays(tmp_path / "cut" / "checkpoint.npz")[1]["progress"]["batch"] == 2
    resumed = _cli(2, tmp_path, "train", "--resume", "cut", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("resuming at epoch 2, batch 3 of 6") == 1
    assert_same_state(tmp_path / "straight", tmp_path / "cut")
    one = _cli(1, tmp_path, "train", "--epochs", "2", "--run-dir", "one", *common)
    assert one.returncode == 0, one.stderr
    history = [load_arrays(tmp_path / d / "checkpoint.npz")[1]["history"] for d in ("one", "straight")]
    np.testing.assert_allclose([r["loss"] for r in history[1]], [r["loss"] for r in history[0]], rtol=1e-4)


@needs_mpi
def test_an_exception_on_one_rank_ends_the_job_with_its_message_once(tmp_path):
    start = time.perf_counter()
    failed = run(2, "raise-in-fit", "1", timeout=60)
    assert failed.returncode != 0
    assert time.perf_counter() - start < 30
    output = failed.stdout + failed.stderr
    assert output.count("rank 1 failed on purpose") == 1, output


@needs_mpi
def test_a_cli_error_on_one_rank_or_on_all_is_said_once(tmp_path):
    start = time.perf_counter()
    failed = _cli(2, tmp_path, "train", "--epochs", "1", "--run-dir", "r", *SMALL, fault=(1, 3, "oserror"))
    assert failed.returncode == 1 and time.perf_counter() - start < 30
    output = failed.stdout + failed.stderr
    assert output.count("the disk went away on purpose") == 1, output
    assert "[rank 1] backprop train: error: the disk went away on purpose" in failed.stderr
    diverged = _cli(2, tmp_path, "train", "--epochs", "1", "--run-dir", "d", *SMALL, "--lr", "1e30")
    assert diverged.returncode == 1
    assert (diverged.stdout + diverged.stderr).count("training stopped") == 1, diverged.stderr
    assert "[rank" not in diverged.stderr
    odd = _cli(2, tmp_path, "train", "--epochs", "1", "--run-dir", "o", *SMALL, "--batch-size", "75")
    assert odd.returncode == 1
    assert odd.stderr.count("the global batch size 75 does not divide over 2 ranks") == 1, odd.stderr


# -- NCCL --------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_nccl_reduces_device_arrays_on_one_rank():
    """One rank's NCCL communicator runs the real NCCL calls on device buffers: the averaged gradients
    are the rank's own times its share, a broadcast keeps rank 0's values."""
    _skip_unavailable("cupy")
    try:
        distributed.nccl_version()
    except ImportError as exc:
        pytest.skip(str(exc))
    backend = bp.get_backend("cupy")
    comm = distributed.NCCLCommunicator()
    bp.manual_seed(0)
    model = bp.zoo.simple_conv_net(backend=backend)
    x = backend.asarray(np.random.default_rng(0).random((8, 1, 28, 28)))
    y = backend.asarray(np.arange(8) % 10)
    averager = distributed.GradientAverager(comm, model.parameters())
    loss = bp.SoftmaxCrossEntropy()
    loss.forward(model.forward(x), y)
    model.backward_params(loss.backward())
    own = [backend.to_numpy(p.grad).copy() for p in model.parameters()]
    averager.average(0.25)
    backend.synchronize()
    for p, g in zip(model.parameters(), own, strict=True):
        np.testing.assert_allclose(backend.to_numpy(p.grad), g * np.float32(0.25), rtol=1e-6)
    weights = [backend.to_numpy(p.data).copy() for p in model.parameters()]
    distributed.broadcast_arrays(comm, [p.data for p in model.parameters()])
    for p, w in zip(model.parameters(), weights, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p.data), w)
    history = model.fit(x, y, loss=loss, optimizer=bp.Adam(model.parameters()), batch_size=4, progress=False,
                        comm=comm)
    assert np.isfinite(history["loss"][0])
