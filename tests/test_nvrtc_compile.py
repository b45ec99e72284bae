"""Every CUDA kernel compiles with NVRTC as the CuPy backend compiles it, for several GPU generations.

``cupy.RawModule(code=cuda.source(), options=cuda.COMPILE_OPTIONS, name_expressions=...)`` hands the
source to NVRTC with options of its own added; this test calls NVRTC through ctypes with the same
options and name expressions, so neither CuPy nor a GPU is needed, only libnvrtc. CI installs NVRTC
for CUDA 12 and 13 from PyPI (``.ci/run``) and sets ``BACKPROP_REQUIRE_NVRTC``, so that there a missing
library fails instead of skipping. Elsewhere the tests skip where no libnvrtc is found (a CUDA
toolkit's, or one from the ``nvidia-cuda-nvrtc*`` wheels installed in this environment).

What CuPy (main at 6b6d956, after v14.2.0: cupy/_core/core.pyx, cupy/cuda/compiler.py) adds to RawModule's options:

* ``assemble_cupy_compiler_options``: ``--std=c++17`` unless the options name a standard (ours do),
  and ``-I`` paths to its bundled CCCL headers, its own headers and the CUDA headers. Our source has no
  ``#include`` (tests/test_cuda_build.py checks that), so the include paths change nothing and are left out.
* ``_compile_with_cache_cuda``: ``-ftz=true`` (float32 subnormals flush to zero).
* ``_compile_using_nvrtc_no_warning``: ``-arch=sm_XX`` (a cubin) where XX is at most the highest
  compute capability that NVRTC version knows (90 before 12.8, 120 for 12.8, 121 after), else
  ``-arch=compute_XX`` (PTX); then ``--device-as-default-execution-space``; ``--pch`` only when
  ``CUPY_NVRTC_USE_PCH`` is set.
* ``_NVRTCProgram.compile``: ``nvrtcAddNameExpression`` for each name expression, ``nvrtcCompileProgram``,
  then ``nvrtcGetLoweredName`` for each, and ``nvrtcGetCUBIN`` (or ``nvrtcGetPTX``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop.kernels import cuda

ARCHS = (75, 90, 100)  # Turing (T4), Hopper (H100), Blackwell (B200)
REQUIRE_ENV = "BACKPROP_REQUIRE_NVRTC"  # e.g. "12 13": NVRTC majors that must be found (set by CI)


def cupy_max_compute_capability(version: tuple[int, int]) -> int:
    """cupy.cuda.compiler._get_max_compute_capability: the highest arch CuPy compiles a cubin for."""
    major, minor = version
    if major == 12 and minor < 8:
        return 90
    if major == 12 and minor == 8:
        return 120
    return 121


def cupy_nvrtc_options(arch: int, version: tuple[int, int]) -> tuple[str, ...]:
    """The options NVRTC gets from ``cupy.RawModule(code=..., options=cuda.COMPILE_OPTIONS, ...)`` on a
    device of compute capability ``arch`` (CuPy's -I include paths left out: see the module docstring)."""
    kind = "sm" if arch <= cupy_max_compute_capability(version) else "compute"
    return (*cuda.COMPILE_OPTIONS, "-ftz=true", f"-arch={kind}_{arch}", "--device-as-default-execution-space")


def _candidates() -> list[str]:
    """libnvrtc files: from the nvidia-cuda-nvrtc* wheels on sys.path, a CUDA toolkit, the loader's path."""
    found = []
    for entry in sys.path:
        # nvidia/cuda_nvrtc/lib/libnvrtc.so.12 (CUDA 12 wheels), nvidia/cu13/lib/libnvrtc.so.13 (CUDA 13)
        found += sorted(glob.glob(os.path.join(entry or ".", "nvidia", "*", "lib", "libnvrtc.so.[0-9]*")))
    for home in filter(None, (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda")):
        found += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so.[0-9]*")))
    system = ctypes.util.find_library("nvrtc")
    if system:
        found.append(system)
    unique: dict[str, str] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path) if os.path.isabs(path) else path, path)
    return list(unique.values())


class NVRTC:
    """The few NVRTC calls CuPy makes, through ctypes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        count = ctypes.c_int()
        self.check(self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * count.value)()
        self.check(self.lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        self.archs = tuple(archs)

    def check(self, result: int, call: str) -> None:
        if result != 0:
            raise RuntimeError(f"{call}: {self.lib.nvrtcGetErrorString(result).decode()}")

    def compile(self, source: str, options: tuple[str, ...], names: list[str]) -> tuple[str, dict[str, str], bytes]:
        """(log, name expression -> lowered name, cubin); raises AssertionError with the log on failure."""
        lib, prog = self.lib, ctypes.c_void_p()
        self.check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"backprop_kernels.cu", 0, None, None),
                   "nvrtcCreateProgram")
        try:
            for name in names:
                self.check(lib.nvrtcAddNameExpression(prog, name.encode()), f"nvrtcAddNameExpression({name})")
            argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            result = lib.nvrtcCompileProgram(prog, len(options), argv)
            size = ctypes.c_size_t()
            self.check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
            buffer = ctypes.create_string_buffer(size.value)
            self.check(lib.nvrtcGetProgramLog(prog, buffer), "nvrtcGetProgramLog")
            log = buffer.value.decode(errors="replace")
            assert result == 0, f"NVRTC {self.version} with {' '.join(options)} failed:\n{log}"
            lowered = {}
            for name in names:
                out = ctypes.c_char_p()
                self.check(lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)),
                           f"nvrtcGetLoweredName({name})")
                assert out.value, f"NVRTC {self.version} lowered {name} to nothing"
                lowered[name] = out.value.decode()
            self.check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
            cubin = ctypes.create_string_buffer(size.value)
            self.check(lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
            return log, lowered, cubin.raw
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


@functools.cache
def libraries() -> dict[int, NVRTC]:
    """NVRTC major version -> the first library of that version found (each found library is loaded)."""
    by_major: dict[int, NVRTC] = {}
    for path in _candidates():
        try:
            nvrtc = NVRTC(path)
        except (OSError, AttributeError, RuntimeError):  # not loadable, or older than CUDA 12's API
            continue
        by_major.setdefault(nvrtc.version[0], nvrtc)
    return by_major


def _required() -> list[int]:
    return [int(m) for m in re.findall(r"\d+", os.environ.get(REQUIRE_ENV, ""))]


def _params() -> list:
    majors = sorted(set(libraries()) | set(_required()))
    if not majors:
        reason = "NVRTC (libnvrtc) is not installed: pip install nvidia-cuda-nvrtc-cu12, or a CUDA toolkit"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-nvrtc")]
    return [pytest.param(m, id=f"cuda{m}") for m in majors]


def test_required_nvrtc_versions_are_installed():
    """CI asks for NVRTC 12 and 13 (BACKPROP_REQUIRE_NVRTC); a missing one fails there, not skips."""
    missing = [m for m in _required() if m not in libraries()]
    assert not missing, (f"{REQUIRE_ENV} asks for NVRTC {missing}, found only "
                         f"{ {m: lib.path for m, lib in libraries().items()} }")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("major", _params())
def test_every_kernel_compiles_with_cupys_nvrtc_options(major, dtype):
    """One translation unit per dtype, as the backend compiles it, for each arch this NVRTC supports:
    no error, no warning, every name expression lowered to its kernel's mangled name, and a cubin."""
    nvrtc = libraries().get(major)
    if nvrtc is None:
        pytest.fail(f"NVRTC {major} is required ({REQUIRE_ENV}) but was not found")
    archs = [a for a in ARCHS if a in nvrtc.archs]
    assert 75 in archs and 90 in archs, (nvrtc.version, nvrtc.archs)  # every NVRTC of CUDA 12 and 13 has them
    if nvrtc.version >= (12, 8):
        assert 100 in archs, (nvrtc.version, nvrtc.archs)
    names = cuda.name_expressions(dtype)
    code = {np.dtype(np.float32): "f", np.dtype(np.float64): "d"}[np.dtype(dtype)]
    source = cuda.source()
    for arch in archs:
        options = cupy_nvrtc_options(arch, nvrtc.version)
        log, lowered, cubin = nvrtc.compile(source, options, names)
        assert "warning" not in log.lower(), f"NVRTC {nvrtc.version} sm_{arch}:\n{log}"
        assert cubin[:4] == b"\x7fELF", f"NVRTC {nvrtc.version} sm_{arch} gave no cubin"
        for kernel, name in zip(cuda.KERNELS, names, strict=True):
            # Itanium mangling of a template kernel: _Z<length><name>I<f or d>E<parameters>
            assert lowered[name].startswith(f"_Z{len(kernel)}{kernel}I{code}E"), (name, lowered[name])
            assert lowered[name].encode() in cubin, (name, lowered[name])  # the entry point is in the cubin
        assert len(set(lowered.values())) == len(names)


def test_cupy_options_follow_the_nvrtc_version():
    """The arch option CuPy picks: a cubin (sm_) up to what the NVRTC version knows, else PTX."""
    assert cupy_nvrtc_options(100, (12, 6))[-2] == "-arch=compute_100"
    assert cupy_nvrtc_options(90, (12, 6))[-2] == "-arch=sm_90"
    assert cupy_nvrtc_options(100, (12, 9))[-2] == "-arch=sm_100"
    assert cupy_nvrtc_options(75, (13, 0)) == ("-std=c++17", "-ftz=true", "-arch=sm_75",
                                               "--device-as-default-execution-space")
    assert Path(cuda.SOURCE_DIR).is_dir()
