"""How should the Numba backend use the cores? End-to-end SimpleConvNet training steps, one subprocess
per setup, so that each gets a fresh thread pool:

    python bench/numba_threading.py   # serial, workqueue, omp, omp + OMP_WAIT_POLICY=PASSIVE,
                                      # serial, omp and workqueue with OpenBLAS held to 1 thread, and
                                      # omp with BLAS on 1 thread during matrix products only
                                      # (that one needs threadpoolctl)

``serial`` is the backend as shipped (serial kernels; the cores belong to BLAS). The other setups run
the same kernels made parallel: this script rewrites ``kernels/numba_cpu.py``'s loops over images and
elements into ``prange`` loops, compiles them with ``parallel=True`` under the named threading layer,
and swaps them into the backend. Batch 100, float32, Adam, random data. The setups take turns over
--rounds rounds (this machine's speed drifts over minutes); images/s is the median over the rounds of
each round's median of --windows windows of --steps steps, after 5 warm-up steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUPS = {
    "serial (as shipped)": ("serial", {}),
    "prange, workqueue layer": ("workqueue", {}),
    "prange, omp layer": ("omp", {}),
    "prange, omp layer, OMP_WAIT_POLICY=PASSIVE": ("omp", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "serial, BLAS 1 thread": ("serial", {"OPENBLAS_NUM_THREADS": "1"}),
    "prange, omp layer, BLAS 1 thread": ("omp", {"OPENBLAS_NUM_THREADS": "1"}),
    "prange, workqueue layer, BLAS 1 thread": ("workqueue", {"OPENBLAS_NUM_THREADS": "1"}),
    "prange, omp layer, BLAS 1 thread during matmul only": ("omp+blas-aside", {}),
}
PARALLEL_LOOPS = ("for ni in range(n):", "for i in range(x.size):", "for i in range(dout.size):",
                  "for i in range(p.size):")


def parallel_kernels(layer: str):
    """``kernels/numba_cpu.py`` with its image and element loops as ``prange``, compiled in parallel."""
    import numba
    numba.config.THREADING_LAYER = layer
    from backprop.kernels import numba_cpu
    src = Path(numba_cpu.__file__).read_text()
    for loop in PARALLEL_LOOPS:
        src = src.replace(loop, loop.replace("range(", "prange("))
    src = src.replace("from numba import njit", "from numba import njit, prange")
    src = src.replace('_JIT = {"cache": True,', '_JIT = {"cache": False,')
    src = src.replace("return njit(**_JIT, **options)", "return njit(parallel=True, **_JIT, **options)")
    path = Path(tempfile.mkdtemp()) / "numba_cpu_parallel.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("numba_cpu_parallel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blas_aside(backend) -> None:
    """Make ``backend.matmul`` run BLAS on one thread and give the count back after each product
    (threadpoolctl), so that BLAS and the parallel kernels never hold the cores at once."""
    from threadpoolctl import ThreadpoolController
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    plain = backend.matmul

    def matmul(*args, **kwargs):
        before = [lib.num_threads for lib in libs]
        for lib in libs:
            lib.set_num_threads(1)
        try:
            return plain(*args, **kwargs)
        finally:
            for lib, count in zip(libs, before):
                lib.set_num_threads(count)
    backend.matmul = matmul


def one(layer: str, steps: int, windows: int) -> float:
    import numpy as np

    from backprop import SoftmaxCrossEntropy, get_backend
    from backprop.optim import Adam
    from backprop.zoo import simple_conv_net

    backend = get_backend("numba")
    if layer.endswith("+blas-aside"):
        layer = layer.split("+")[0]
        blas_aside(backend)
    if layer != "serial":
        backend.k = parallel_kernels(layer)
    model = simple_conv_net(backend=backend)
    opt = Adam(model.parameters(), lr=1e-3)
    loss = SoftmaxCrossEntropy(backend)
    rng = np.random.default_rng(0)
    batches = [(rng.random((100, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 100)) for _ in range(10)]

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        loss.forward(model.forward(x), y)
        model.backward_params(loss.backward())
        opt.step()

    for i in range(5):
        step(i)
    rates = []
    for _ in range(windows):
        t = time.perf_counter()
        for i in range(steps):
            step(i)
        rates.append(steps * 100 / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--windows", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(f"{one(args.one, args.steps, args.windows):.1f}")
        return 0
    print(f"SimpleConvNet training, batch 100, float32, Adam; {os.cpu_count()} CPUs; "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}\n")
    rates: dict[str, list[float]] = {name: [] for name in SETUPS}
    failures: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, (layer, env) in SETUPS.items():
            r = subprocess.run([sys.executable, __file__, "--one", layer, "--steps", str(args.steps),
                                "--windows", str(args.windows)], env={**os.environ, **env},
                               capture_output=True, text=True)
            if r.returncode == 0:
                rates[name].append(float(r.stdout.split()[-1]))
            else:
                failures[name] = r.stderr.strip()[-200:]
    print("| Numba setup | images/s (median of rounds) | each round |\n|---|---:|---|")
    for name, got in rates.items():
        if name in failures:
            print(f"| {name} | failed: {failures[name]} | |")
        else:
            print(f"| {name} | {statistics.median(got):,.0f} | {', '.join(f'{g:,.0f}' for g in got)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
