"""Build the CUDA kernels as a host library with g++ and run them through kernels/cuda.py.

``build`` compiles the exact source NVRTC gets (``backprop.kernels.cuda.source()``) after shim.h,
plus one table entry per kernel instantiation that kernels/cuda.py names, into a shared library.
:class:`HarnessRunner` is a kernels/cuda.py runner backed by that library: the functions of
kernels/cuda.py allocate NumPy arrays and build their kernel arguments as they do for CuPy, and the
runner checks the arguments against the kernel's C parameter list before calling it through ctypes.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from backprop.kernels import cuda

HERE = Path(__file__).resolve().parent
DTYPES = (np.float32, np.float64)
SANITIZE_ENV = "BACKPROP_HARNESS_SANITIZE"  # "1": the harness_lib fixture builds with SANITIZE_FLAGS
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")


def gxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def translation_unit() -> str:
    names = [cuda.name_expression(k, dt) for dt in DTYPES for k in cuda.KERNELS]
    entries = "\n".join(f'    {{"{n}", (void*)&Launch<&{n}>::run, &Launch<&{n}>::signature}},' for n in names)
    return f"""#include "shim.h"

{cuda.source()}

#include "launcher.h"

// ---- the harness: every instantiation kernels/cuda.py names, by that name
struct Entry {{
  const char* name;
  void* run;
  std::string (*signature)();
}};
static const Entry entries[] = {{
{entries}
}};

static const Entry* find(const char* name) {{
  for (const Entry& e : entries)
    if (std::strcmp(e.name, name) == 0) return &e;
  return nullptr;
}}

extern "C" void* bp_kernel(const char* name) {{
  const Entry* e = find(name);
  return e ? e->run : nullptr;
}}

extern "C" const char* bp_signature(const char* name) {{
  static std::string last;
  const Entry* e = find(name);
  last = e ? e->signature() : std::string();
  return last.c_str();
}}

extern "C" void bp_set_only_threads(const long long* ids, long long n) {{ only_threads.assign(ids, ids + n); }}
"""


def build(out_dir: Path, sanitize: bool = False) -> ctypes.CDLL:
    """Compile the harness into ``out_dir`` and load it; raises CalledProcessError with g++'s output."""
    compiler = gxx()
    if compiler is None:
        raise FileNotFoundError("g++ not found")
    tu = out_dir / "harness.cpp"
    tu.write_text(translation_unit(), encoding="utf-8")
    lib = out_dir / ("harness_sanitized.so" if sanitize else "harness.so")
    cmd = [compiler, "-std=c++17", "-O1", "-g", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror=conversion",
           "-Werror=sign-conversion", "-Wconversion", "-Wsign-conversion", f"-I{HERE}",
           *(SANITIZE_FLAGS if sanitize else ()), str(tu), "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    handle = ctypes.CDLL(str(lib))
    handle.bp_kernel.restype = ctypes.c_void_p
    handle.bp_kernel.argtypes = [ctypes.c_char_p]
    handle.bp_signature.restype = ctypes.c_char_p
    handle.bp_signature.argtypes = [ctypes.c_char_p]
    handle.bp_set_only_threads.argtypes = [ctypes.c_void_p, ctypes.c_longlong]
    return handle


_SCALARS = {np.float32: ("f", ctypes.c_float), np.float64: ("d", ctypes.c_double),
            np.int32: ("i", ctypes.c_int), np.int64: ("q", ctypes.c_longlong)}
_POINTEES = {np.dtype(t): code for t, (code, _) in _SCALARS.items()}


def _ctype(arg: Any) -> tuple[str, Any, Any]:
    """(signature code, ctypes type, ctypes value) of one kernel argument."""
    if isinstance(arg, np.ndarray):
        return "*" + _POINTEES[arg.dtype], ctypes.c_void_p, ctypes.c_void_p(arg.ctypes.data)
    if type(arg) in _SCALARS:
        code, ctype = _SCALARS[type(arg)]
        return code, ctype, ctype(arg.item())
    raise TypeError(f"kernel argument {arg!r} of type {type(arg).__name__}: pass arrays or NumPy scalars "
                    "of the exact C type (CuPy packs arguments by their Python type)")


class HarnessRunner:
    """Runs kernels/cuda.py's launches on the CPU.

    Like CuPy's runner, it uses blocks of ``block`` threads and at most ``grid`` blocks (None: as
    many as the elements need, one element per thread). ``only_threads`` restricts a launch to those
    global thread ids (with ``xp`` allocating lazily, to probe single elements of huge arrays).
    """

    def __init__(self, lib: ctypes.CDLL, grid: int | None = 2, block: int = 32, xp: Any = np,
                 only_threads: list[int] | None = None) -> None:
        self.lib, self.grid, self.block, self.xp = lib, grid, block, xp
        self.only_threads = only_threads
        self.launched: list[str] = []

    def launch(self, kernel: str, dtype: Any, total: int, args: tuple) -> None:
        name = cuda.name_expression(kernel, dtype).encode()
        codes, ctypes_, values = zip(*(_ctype(a) for a in args), strict=True)
        expected = self.lib.bp_signature(name).decode()
        assert expected, f"the harness has no kernel {name.decode()}"
        assert "".join(codes) == expected, f"{name.decode()}: arguments {''.join(codes)}, parameters {expected}"
        self.launched.append(kernel)
        if total <= 0:
            return
        blocks = math.ceil(total / self.block)
        grid = blocks if self.grid is None else min(self.grid, blocks)
        ids = np.asarray(self.only_threads or [], dtype=np.int64)
        assert (ids < grid * self.block).all(), "a probed thread lies outside the grid"
        self.lib.bp_set_only_threads(ids.ctypes.data, ids.size)
        try:
            function = ctypes.CFUNCTYPE(None, ctypes.c_uint, ctypes.c_uint, *ctypes_)(self.lib.bp_kernel(name))
            function(grid, self.block, *values)
        finally:
            self.lib.bp_set_only_threads(None, 0)


def lazy_array_module() -> Any:
    """An ``xp`` whose ``empty`` maps zero pages lazily, so arrays of many GiB cost memory only where
    they are touched."""
    return SimpleNamespace(empty=lazy_zeros, asarray=np.asarray, ascontiguousarray=np.ascontiguousarray, full=np.full)


def map_noreserve() -> int | None:
    """mmap's MAP_NORESERVE flag (Python has it from 3.13; Linux's value on common CPUs before)."""
    if hasattr(mmap, "MAP_NORESERVE"):
        return mmap.MAP_NORESERVE
    if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64", "i686", "armv7l"):
        return 0x4000
    return None


def lazy_zeros(shape: Any, dtype: Any) -> np.ndarray:
    """Zeros in anonymous memory mapped without reserving swap: untouched pages cost nothing."""
    flag = map_noreserve()
    if flag is None:
        raise OSError("no MAP_NORESERVE on this platform")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flag)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)
