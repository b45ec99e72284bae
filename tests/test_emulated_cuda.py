"""The emulated CUDA device (tests/cuda_harness/emulated.py) refuses what CuPy and CUDA refuse, and
a CLI training epoch runs on the CuPy backend through it. (Every backend-parametrized test also runs
on it, as ``cupy-emulated``: tests/conftest.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from backprop import runs
from backprop.backends.cupy_backend import CupyBackend
from backprop.cli import main
from cuda_harness import emulated
from cuda_harness.device_array import DeviceArray

dev = emulated.EmulatedCupy().asarray  # a host-to-device copy


@pytest.fixture
def relu(harness_lib):
    return emulated.EmulatedKernel(harness_lib, "relu", np.float32)


def test_the_emulated_backend_is_the_cupy_backend_on_a_cupy_like_module(emulated_cupy):
    assert type(emulated_cupy) is CupyBackend and emulated_cupy.name == "cupy"
    assert emulated_cupy.xp is not np  # code that special-cases NumPy takes the GPU path
    assert isinstance(emulated_cupy.runner, emulated.EmulatedRunner)
    x = emulated_cupy.asarray(np.arange(3.0))
    host = emulated_cupy.to_numpy(x)
    host[0] = 7  # a device-to-host copy, never a view
    assert x[0] == 0


def test_kernels_run_through_the_emulated_runner(emulated_cupy):
    before = emulated_cupy.runner.launches
    emulated_cupy.relu(emulated_cupy.asarray(np.linspace(-1, 1, 10_000)))  # more than one grid: 32 x 256
    assert emulated_cupy.runner.launches == before + 1


def test_arguments_are_packed_as_cupy_packs_them(relu):
    x, y = dev(np.ones(4, np.float32)), dev(np.empty(4, np.float32))
    relu((1,), (32,), (x, y, 4))  # a Python int is a 64-bit integer: the long long parameter
    np.testing.assert_array_equal(y.get(), 1)
    relu((1,), (32,), (x, y, np.array([4])))  # a one-element host array: by value, as its dtype (int64)
    with pytest.raises(TypeError, match="packed as '\\*f\\*fi'"):
        relu((1,), (32,), (x, y, np.int32(4)))  # a NumPy scalar keeps its width
    with pytest.raises(TypeError, match="packed as '\\*f\\*fd'"):
        relu((1,), (32,), (x, y, 4.0))  # a Python float is a double
    with pytest.raises(TypeError, match="packed as '\\*d\\*fq'"):
        relu((1,), (32,), (x.astype(np.float64), y, 4))
    with pytest.raises(TypeError, match="unsupported kernel argument 2"):
        relu((1,), (32,), (x, y, "4"))
    with pytest.raises(TypeError, match="must be a tuple"):
        relu((1,), (32,), [x, y, 4])
    with pytest.raises(TypeError, match="numpy.ndarray of shape \\(4,\\) as a kernel parameter"):
        relu((1,), (32,), (np.ones(4, np.float32), y, 4))  # host memory: CuPy refuses it


def test_arrays_must_be_what_a_bare_pointer_can_describe(relu):
    x, y = dev(np.ones(8, np.float32)), dev(np.empty(4, np.float32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        relu((1,), (32,), (x[::2], y, 4))
    with pytest.raises(ValueError, match="negative strides"):
        relu((1,), (32,), (x[::-1], y, 4))
    with pytest.raises(ValueError, match="not aligned"):
        relu((1,), (32,), (np.frombuffer(bytes(20), np.float32, 4, offset=1).view(DeviceArray), y, 4))


def test_launches_must_fit_cudas_limits(relu):
    x, y = dev(np.ones(4, np.float32)), dev(np.empty(4, np.float32))
    with pytest.raises(ValueError, match="block's x = 2048"):
        relu((1,), (2048,), (x, y, 4))
    with pytest.raises(ValueError, match="more than 1024 threads"):
        relu((1,), (64, 32), (x, y, 4))
    with pytest.raises(ValueError, match="grid's x = 0"):
        relu((0,), (32,), (x, y, 4))
    with pytest.raises(ValueError, match="grid's y = 65536"):
        relu((1, 65536), (32,), (x, y, 4))
    with pytest.raises(TypeError, match="Python ints"):
        relu((np.int64(1),), (32,), (x, y, 4))


def test_one_cli_epoch_on_the_emulated_device(emulated_cupy, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BACKPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs, "get_backend", lambda name, dtype: emulated_cupy.with_dtype(dtype))
    before = emulated_cupy.runner.launches
    assert main(["train", "--model", "lenet5", "--backend", "cupy", "--epochs", "1", "--run-dir", "run",
                 "--train-limit", "200", "--test-limit", "100", "--batch-size", "50", "--no-progress"]) == 0
    assert "epoch 1" in capsys.readouterr().out.lower()
    assert emulated_cupy.runner.launches > before  # the CUDA kernels ran, not the reference
    assert (tmp_path / "run" / "checkpoint.npz").exists()


def test_running_out_of_memory_anywhere_in_a_step_names_the_step(emulated_cupy, monkeypatch):
    """Kernels name themselves; any other allocation of a step (a layer's array arithmetic, cuBLAS's
    workspace) is caught around the whole step, with the bytes asked and the memory free."""
    from backprop import zoo
    from backprop.backends.cupy_backend import GPUOutOfMemoryError
    from backprop.losses import SoftmaxCrossEntropy
    from backprop.optim import Adam
    from backprop.training import train_step

    model = zoo.mlp(backend=emulated_cupy)
    x = emulated_cupy.asarray(np.zeros((4, 784), np.float32))
    y = emulated_cupy.asarray(np.arange(4))

    def exhausted(dout):
        raise emulated.OutOfMemoryError(123_456_789)

    monkeypatch.setattr(model.layers[-1], "backward", exhausted)
    with pytest.raises(GPUOutOfMemoryError, match=r"in a training step on a batch of \(4, 784\): CuPy could not "
                                                  r"allocate 123,456,789 bytes; .* bytes were free on GPU 0"):
        train_step(model, SoftmaxCrossEntropy().to(emulated_cupy), Adam(model.parameters()), x, y)
