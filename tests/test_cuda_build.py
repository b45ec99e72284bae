"""The CUDA backend's parts that need no GPU: the sources compile with nvcc, they ship as package data,
importing never needs CuPy, and running out of GPU memory gives a clear error."""

from __future__ import annotations

import importlib.machinery
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backprop.backends import BackendUnavailableError, available_backends, get_backend, registry
from backprop.backends.cupy_backend import GPUOutOfMemoryError, oom_guard, probe
from backprop.kernels import cuda


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    for home in filter(None, (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")):
        if found is None and os.access(Path(home, "bin", "nvcc"), os.X_OK):
            found = str(Path(home, "bin", "nvcc"))
    return found


@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_every_kernel_compiles_to_ptx_with_nvcc(tmp_path, arch):
    """nvcc's front end is NVRTC's: device-side errors that g++ (in the CPU harness) cannot see, such
    as a __host__ function called from a kernel, fail here. Warnings count as errors."""
    compiler = nvcc()
    if compiler is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    names = [cuda.name_expression(k, dt) for dt in (np.float32, np.float64) for k in cuda.KERNELS]
    # Taking each instantiation's address makes nvcc compile it, as name_expressions make NVRTC.
    table = "".join(f"    (void*)&{n},\n" for n in names)
    src = tmp_path / "kernels.cu"
    src.write_text(f"{cuda.source()}\n\nextern void* const backprop_kernels[];\n"
                   f"void* const backprop_kernels[] = {{\n{table}}};\n", encoding="utf-8")
    ptx = tmp_path / "kernels.ptx"
    result = subprocess.run([compiler, "-ptx", f"-arch={arch}", *cuda.COMPILE_OPTIONS, "-Werror", "all-warnings",
                             str(src), "-o", str(ptx)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    entries = re.findall(r"^\.visible \.entry (\w+)\(", ptx.read_text(), flags=re.MULTILINE)
    assert len(entries) == len(names)
    for kernel in cuda.KERNELS:  # Itanium mangling: _Z<length><name>I<f or d>E...
        for code in "fd":
            assert any(e.startswith(f"_Z{len(kernel)}{kernel}I{code}E") for e in entries), (kernel, code)


def test_sources_are_all_listed_and_need_no_header():
    """Every file of kernels/cuda is compiled (SOURCE_FILES), and NVRTC, which has no standard headers,
    gets no #include: the .cu files include only common.cuh, which source() inlines."""
    on_disk = {p.name for p in cuda.SOURCE_DIR.iterdir() if p.suffix in (".cu", ".cuh")}
    assert on_disk == set(cuda.SOURCE_FILES)
    text = cuda.source()
    assert "#include" not in text
    for kernel in cuda.KERNELS:
        assert re.search(rf"__global__ void {kernel}\(", text), kernel


def test_importing_the_cuda_backend_needs_no_cupy(tmp_path):
    """With CuPy made unimportable, everything imports, and the backend reports itself unavailable."""
    code = """
import sys
sys.modules["cupy"] = None  # any `import cupy` now raises ImportError
import backprop, backprop.kernels.cuda, backprop.backends.cupy_backend
from backprop.backends import available_backends, get_backend, BackendUnavailableError
assert "not installed" in available_backends()["cupy"], available_backends()
try:
    get_backend("cupy")
except BackendUnavailableError as exc:
    print("unavailable:", exc)
else:
    raise AssertionError("get_backend('cupy') worked without CuPy")
"""
    # outside the source tree, so that an installed wheel is what gets imported
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unavailable: backend 'cupy' is not available" in result.stdout


class FakeOutOfMemoryError(MemoryError):
    """Stands in for cupy.cuda.memory.OutOfMemoryError (which keeps the request in ``_size``)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"Out of memory allocating {size:,} bytes")
        self._size = size


class FakeCUBLASError(RuntimeError):
    """Stands in for cupy_backends.cuda.libs.cublas.CUBLASError (the status in ``status``)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"CUBLAS status {status}")
        self.status = status


def fake_cupy(free=1_000, total=80_000, mem_info_error=None):
    def mem_get_info():
        if mem_info_error:
            raise mem_info_error
        return free, total

    pool = SimpleNamespace(total_bytes=lambda: 5_000, free_bytes=lambda: 3_000)
    return SimpleNamespace(
        cuda=SimpleNamespace(memory=SimpleNamespace(OutOfMemoryError=FakeOutOfMemoryError),
                             cublas=SimpleNamespace(CUBLASError=FakeCUBLASError),
                             runtime=SimpleNamespace(memGetInfo=mem_get_info, getDevice=lambda: 1)),
        get_default_memory_pool=lambda: pool)


def test_out_of_memory_names_the_operation_the_request_and_the_free_memory():
    x = np.zeros((64, 3, 32, 32), np.float32)
    with pytest.raises(GPUOutOfMemoryError) as info, oom_guard(fake_cupy(), "im2col", x):
        raise FakeOutOfMemoryError(7_077_888)
    message = str(info.value)
    assert isinstance(info.value, MemoryError)
    assert "im2col on float32 (64, 3, 32, 32)" in message
    assert "7,077,888 bytes" in message and "1,000 of 80,000 bytes were free on GPU 1" in message
    assert "3,000 of them cached" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no CuPy trace attached


def test_cublas_failing_to_allocate_its_workspace_is_out_of_memory_too():
    with pytest.raises(GPUOutOfMemoryError, match=r"in matmul on float32 \(2, 2\): cuBLAS could not allocate its "
                                                  r"workspace; 1,000 of 80,000 bytes were free"), \
            oom_guard(fake_cupy(), "matmul", np.zeros((2, 2), np.float32)):
        raise FakeCUBLASError(3)  # CUBLAS_STATUS_ALLOC_FAILED
    with pytest.raises(FakeCUBLASError), oom_guard(fake_cupy(), "matmul"):
        raise FakeCUBLASError(7)  # another cuBLAS failure is not about memory


def test_out_of_memory_report_survives_a_failing_device_query():
    cupy = fake_cupy(mem_info_error=RuntimeError("cudaErrorDevicesUnavailable"))
    with pytest.raises(GPUOutOfMemoryError, match="free memory is unknown .*cudaErrorDevicesUnavailable"), \
            oom_guard(cupy, "matmul"):
        raise FakeOutOfMemoryError(10)


def test_other_errors_pass_through_the_guard():
    with pytest.raises(ValueError, match="not memory"), oom_guard(fake_cupy(), "relu"):
        raise ValueError("not memory")
    with pytest.raises(MemoryError, match="host") as info, oom_guard(fake_cupy(), "relu"):
        raise MemoryError("host")  # a host MemoryError is not CuPy's
    assert not isinstance(info.value, GPUOutOfMemoryError)


# -- on a GPU: the backend runs the CUDA kernels, and out-of-memory errors are ours ------------------------

@pytest.fixture
def cupy_backend():
    reason = available_backends()["cupy"]
    if reason is not None:
        pytest.skip(f"no usable CUDA device: {reason}")
    return get_backend("cupy")


@pytest.mark.gpu
def test_backend_uses_the_cuda_kernels_and_falls_back_for_other_dtypes(cupy_backend, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    _, argmax = cupy_backend.maxpool2d(cupy_backend.asarray(x), (2, 2), (2, 2), (0, 0))
    assert argmax.dtype == np.int32  # the CUDA kernel's (the reference gives int8)
    half = cupy_backend.xp.asarray(x.astype(np.float16))
    out, argmax = cupy_backend.maxpool2d(half, (2, 2), (2, 2), (0, 0))  # no float16 kernel: the reference
    assert out.dtype == np.float16 and argmax.dtype == np.int8


@pytest.mark.gpu
def test_backend_out_of_memory_is_a_clear_error(cupy_backend):
    with pytest.raises(GPUOutOfMemoryError, match=r"empty\(\(17592186044416,\), float32\).*bytes were free"):
        cupy_backend.empty((2**44,))


# -- availability: probe() runs everything the backend needs, and "auto" falls back with one warning ---------

class FakeCompileException(Exception):
    """Stands in for cupy.cuda.compiler.CompileException."""


class FakeRandomState:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def standard_normal(self, shape, dtype=np.float64):
        return self.rng.standard_normal(shape).astype(dtype)


class FakeRawModule:
    """Compiles nothing: get_function gives the kernel's NumPy equivalent, for relu only."""

    def __init__(self, code, options, name_expressions):
        assert "relu" in code and options == cuda.COMPILE_OPTIONS
        self.names = name_expressions

    def get_function(self, name):
        def relu(grid, block, args):
            x, y, n = args
            np.maximum(x, 0, out=y)
            assert int(n) == x.size

        return relu if name.startswith("relu<") else None


def cupy_that_works(**broken) -> types.ModuleType:
    """A fake CuPy module running on NumPy; ``broken`` replaces some of its parts (e.g. one that raises)."""
    cupy = types.ModuleType("cupy")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    parts = dict(
        float32=np.float32, arange=np.arange, asarray=np.asarray, asnumpy=np.asarray, empty=np.empty,
        ascontiguousarray=np.ascontiguousarray, matmul=np.matmul, RawModule=FakeRawModule,
        random=SimpleNamespace(RandomState=FakeRandomState),
        cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0),
                             Device=lambda device: SimpleNamespace(attributes={"MultiProcessorCount": 2}),
                             compiler=SimpleNamespace(CompileException=FakeCompileException)),
    )
    parts.update(broken)
    for name, value in parts.items():
        setattr(cupy, name, value)
    return cupy


def raises(exc):
    def call(*args, **kwargs):
        raise exc

    return call


@pytest.fixture
def fake_cupy_module(monkeypatch):
    """Install a fake CuPy: returns a function that puts one in sys.modules with fresh registry and kernel
    caches, so that probe() and get_backend("auto") run against it."""
    def install(cupy):
        monkeypatch.setitem(sys.modules, "cupy", cupy)
        monkeypatch.setattr(registry, "_reasons", {})
        monkeypatch.setattr(registry, "_warned", set())
        monkeypatch.setattr(registry, "_instances", {})
        monkeypatch.setattr(cuda, "_compiled", {})
        monkeypatch.setattr(cuda, "_sm_count", {})
        return cupy

    return install


def test_probe_passes_when_every_step_works(fake_cupy_module):
    fake_cupy_module(cupy_that_works())
    assert probe() is None


LIBCURAND = "libcurand.so.10: cannot open shared object file: No such file or directory"
BROKEN = {
    "curand": (dict(random=SimpleNamespace(RandomState=raises(ImportError(LIBCURAND)))), "cuRAND", LIBCURAND),
    "cublas": (dict(matmul=raises(RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED"))), "cuBLAS",
               "CUBLAS_STATUS_NOT_INITIALIZED"),
    "nvrtc": (dict(RawModule=raises(FakeCompileException(
        "backprop_kernels.cu(12): warning: unused\nbackprop_kernels.cu(40): error: identifier \"x\" is undefined\n"
        "1 error detected"))), "NVRTC", 'compiling the CUDA kernels for float32 failed: ... '
                                        'backprop_kernels.cu(40): error: identifier "x" is undefined [...]'),
    "wrong-relu": (dict(RawModule=lambda code, options, name_expressions: SimpleNamespace(
        get_function=lambda name: lambda grid, block, args: args[1].fill(7))), "NVRTC", "relu of [-1.5, 0, 2] gave"),
}


@pytest.mark.parametrize("part", BROKEN)
def test_probe_names_the_step_that_failed(fake_cupy_module, part):
    broken, step, detail = BROKEN[part]
    fake_cupy_module(cupy_that_works(**broken))
    reason = probe()
    assert reason is not None and step in reason and detail in reason, reason
    assert "\n" not in reason and "backprop[cuda12]" in reason


def test_probe_without_a_device(fake_cupy_module):
    fake_cupy_module(cupy_that_works(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 0))))
    assert probe() == "CuPy found no CUDA device"
    fake_cupy_module(cupy_that_works(cuda=SimpleNamespace(runtime=SimpleNamespace(
        getDeviceCount=raises(RuntimeError("cudaErrorInsufficientDriver\nmore"))))))
    assert probe() == "CuPy is installed but CUDA does not work: RuntimeError: cudaErrorInsufficientDriver [...]"


def test_auto_falls_back_to_the_cpu_with_one_warning_when_curand_is_missing(fake_cupy_module, recwarn):
    fake_cupy_module(cupy_that_works(**BROKEN["curand"][0]))
    cpu = "numba" if available_backends()["numba"] is None else "numpy"
    assert get_backend("auto").name == cpu
    assert get_backend("auto", np.float64).name == cpu
    warned = [str(w.message) for w in recwarn.list if "GPU" in str(w.message)]
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert warned[0].startswith("backprop: no usable GPU (cuRAND") and warned[0].endswith("running on the CPU")
    with pytest.raises(BackendUnavailableError, match="cuRAND .*libcurand"):
        get_backend("cupy")
