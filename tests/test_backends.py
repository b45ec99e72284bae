"""The registry ("auto", errors for unavailable backends, the context manager and the environment
variable) and the Backend basics every backend shares: dtypes, conversion, seeding, mixing errors."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import backprop as bp
from backprop.backends import registry
from backprop.backends.install import pip_install


def test_numpy_is_always_available():
    assert bp.available_backends()["numpy"] is None
    assert bp.get_backend("numpy").name == "numpy"


def test_unavailable_backend_raises_with_install_hint(monkeypatch):
    monkeypatch.setitem(registry._reasons, "cupy", f"CuPy is not installed: {pip_install('cuda12')}")
    with pytest.raises(bp.BackendUnavailableError, match=re.escape(pip_install("cuda12"))):
        bp.get_backend("cupy")


def cpu_choice():
    return "numba" if bp.available_backends()["numba"] is None else "numpy"


def test_auto_falls_back_to_the_cpu_when_no_gpu_works(monkeypatch):
    monkeypatch.setitem(registry._reasons, "cupy", "CuPy is installed but CUDA does not work: no driver")
    with pytest.warns(UserWarning, match="no usable GPU"):
        assert bp.get_backend("auto").name == cpu_choice()


def test_auto_prefers_a_working_gpu_then_numba_then_numpy(monkeypatch):
    expected = "cupy" if bp.available_backends()["cupy"] is None else cpu_choice()
    assert bp.get_backend("auto").name == expected
    monkeypatch.setitem(registry._reasons, "cupy", "CuPy is not installed")
    monkeypatch.setitem(registry._reasons, "numba", "Numba is not installed")
    assert bp.get_backend("auto").name == "numpy"


def test_unknown_backend_name_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of numpy|choose one of .*numpy"):
        bp.get_backend("tpu")


def test_default_backend_from_environment_and_context(monkeypatch):
    monkeypatch.setenv("BACKPROP_BACKEND", "numpy")
    assert bp.get_backend().name == "numpy"
    monkeypatch.setenv("BACKPROP_BACKEND", "tpu")
    with pytest.raises(ValueError, match="tpu"):
        bp.get_backend()
    with bp.use_backend("numpy", dtype="float64") as b:
        assert bp.get_backend() is b and b.dtype == np.float64
        assert bp.Linear(2, 2).W.dtype == np.float64
    monkeypatch.delenv("BACKPROP_BACKEND")
    assert bp.get_backend().dtype == np.float32


def test_dtype_is_float32_by_default_and_float64_on_request(backend, backend64):
    assert backend.dtype == np.float32 and backend64.dtype == np.float64
    assert backend.asarray(np.zeros(3)).dtype == np.float32  # float64 data take the backend's dtype
    assert backend.asarray([1, 2]).dtype.kind == "i"  # labels stay integers
    assert backend.zeros((2,)).dtype == np.float32
    with pytest.raises(TypeError, match="float32 .default. or float64"):
        bp.get_backend(backend, dtype="float16")


def test_asarray_to_numpy_round_trip(backend, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    a = backend.asarray(x)
    assert backend.is_array(a)
    np.testing.assert_array_equal(backend.to_numpy(a), x)


def test_same_seed_same_numbers(backend):
    backend.seed(7)
    first = backend.to_numpy(backend.standard_normal((5,)))
    backend.seed(7)
    np.testing.assert_array_equal(backend.to_numpy(backend.standard_normal((5,))), first)
    assert backend.to_numpy(backend.uniform((5,))).dtype == np.float32


def test_manual_seed_makes_models_reproducible(backend):
    def weights():
        bp.manual_seed(3)
        with bp.use_backend(backend):
            return backend.to_numpy(bp.Sequential(bp.Linear(4, 3), bp.ReLU(), bp.Linear(3, 2))[0].W.data)
    np.testing.assert_array_equal(weights(), weights())


def test_mixing_dtypes_is_a_clear_error(backend):
    with bp.use_backend(backend):
        layer = bp.Linear(3, 2)
    with pytest.raises(TypeError, match=r"float64.*astype\('float32'\)"):
        layer.forward(backend.asarray(np.zeros((2, 3)), dtype=np.float64))


def test_mixing_backends_is_a_clear_error(backend):
    with bp.use_backend(backend):
        layer = bp.ReLU()
    with pytest.raises(TypeError, match="backend.asarray"):
        layer.forward([[1.0, 2.0]])
    with pytest.raises(ValueError, match="different backends"):
        bp.Sequential(bp.Linear(2, 2, backend=backend),
                      bp.Linear(2, 2, backend=bp.get_backend(backend, "float64")))


def test_importing_backprop_does_not_import_cupy(tmp_path):
    code = "import sys, backprop; print('cupy' in sys.modules)"
    # run outside the source tree, so the installed package is what gets imported
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=tmp_path).stdout.strip() == "False"


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_fit_trains_on_big_endian_labels_and_images_as_on_native_ones(name):
    """IDX files are big-endian: ``backend.asarray`` puts data in native byte order once, on the way in,
    so the kernels never see another (Numba's failed on big-endian int64 labels)."""
    if bp.available_backends()[name] is not None:
        pytest.skip(f"backend {name!r} unavailable")
    backend = bp.get_backend(name)
    assert backend.asarray(np.arange(3, dtype=">i8")).dtype == np.dtype("int64")
    assert backend.asarray(np.arange(3, dtype=">u2")).dtype == np.dtype("uint16")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 6)), rng.integers(0, 3, 12)
    histories = []
    for xs, ys in ((x, y), (x.astype(">f8"), y.astype(">i8"))):
        bp.manual_seed(0)
        model = bp.Sequential(bp.Linear(6, 3, backend=backend))
        histories.append(model.fit(xs, ys, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.SGD(model.parameters(), lr=0.1),
                                   batch_size=4, seed=0, progress=False))
    assert histories[0] == histories[1]


def test_a_private_backend_s_sibling_follows_manual_seed(backend):
    """model.to(dtype=...) on a backend made outside get_backend gives a sibling seeded like the registry's
    own backends, so Dropout stays reproducible."""
    private = type(backend)(backend.dtype, xp=backend.xp, runner=backend.runner) if backend.name == "cupy" \
        else type(backend)(backend.dtype)
    masks = []
    for _ in range(2):
        bp.manual_seed(0)
        drop = bp.Dropout(0.5, backend=private).to(dtype=np.float64)
        masks.append(drop.backend.to_numpy(drop.forward(drop.backend.asarray(np.ones((4, 8))))))
    np.testing.assert_array_equal(masks[0], masks[1])
