"""The CUDA backend's parts that need no GPU: the sources compile with nvcc, they ship as package data,
importing never needs CuPy, and running out of GPU memory gives a clear error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from backprop.backends import available_backends, get_backend
from backprop.backends.cupy_backend import GPUOutOfMemoryError, oom_guard
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


def fake_cupy(free=1_000, total=80_000, mem_info_error=None):
    def mem_get_info():
        if mem_info_error:
            raise mem_info_error
        return free, total

    pool = SimpleNamespace(total_bytes=lambda: 5_000, free_bytes=lambda: 3_000)
    return SimpleNamespace(
        cuda=SimpleNamespace(memory=SimpleNamespace(OutOfMemoryError=FakeOutOfMemoryError),
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
