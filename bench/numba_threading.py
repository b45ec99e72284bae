"""How should the Numba backend use the cores? End-to-end SimpleConvNet training steps with the
shipped serial kernels and with the same kernels as ``prange`` loops, side by side in one process:

    python bench/numba_threading.py            # every environment below, 20 rounds each

One subprocess per environment (a thread pool's settings are fixed when it starts): Numba's default
threading layer as it comes (OpenMP threads spin for a while after each kernel), OpenMP told to sleep
at once (OMP_WAIT_POLICY=PASSIVE), Numba's workqueue layer, and OpenBLAS held to one thread. Inside
each, the kernel variants take turns block by block, so that this machine's drift (up to 2x over
minutes) hits them alike, and each round's ratio to the serial block of the same round is reported:

- ``serial``: the backend as shipped; the cores belong to BLAS between kernels;
- ``prange``: ``kernels/numba_cpu.py`` with its loops over images and elements rewritten as
  ``prange`` and compiled with ``parallel=True``;
- ``prange, BLAS 1 thread in matmul``: the same, with BLAS held to one thread during the backend's
  matrix products only (threadpoolctl), so that the two pools never hold the cores at once.

Batch 100, float32, Adam, random data; --steps steps a block after warm-up steps that compile.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ab_kernels import interleave, load_module, ratio_summary

from backprop.checks import int_arg

ENVIRONMENTS = {
    "as it comes": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "NUMBA_THREADING_LAYER=workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
    "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"},
}
PARALLEL_LOOPS = ("for ni in range(n):", "for i in range(x.size):", "for i in range(dout.size):",
                  "for i in range(p.size):")


def parallel_kernels(folder: Path):
    """``kernels/numba_cpu.py`` with its image and element loops as ``prange``, compiled in parallel
    (under the threading layer NUMBA_THREADING_LAYER names, or Numba's default)."""
    from backprop.kernels import numba_cpu
    src = Path(numba_cpu.__file__).read_text()
    for loop in PARALLEL_LOOPS:
        src = src.replace(loop, loop.replace("range(", "prange("))
    src = src.replace("from numba import njit", "from numba import njit, prange")
    src = src.replace("return njit(**_JIT, **options)", "return njit(parallel=True, **_JIT, **options)")
    return load_module(src, folder, "numba_cpu_parallel")


def one_blas_thread(matmul):
    """``matmul`` running BLAS on one thread, giving the count back after each product (threadpoolctl)."""
    from threadpoolctl import ThreadpoolController
    libs = ThreadpoolController().select(user_api="blas").lib_controllers

    def aside(*args, **kwargs):
        before = [lib.num_threads for lib in libs]
        for lib in libs:
            lib.set_num_threads(1)
        try:
            return matmul(*args, **kwargs)
        finally:
            for lib, count in zip(libs, before, strict=True):
                lib.set_num_threads(count)
    return aside


def one(steps: int, rounds: int) -> dict:
    """This process's environment: images/s of every variant, round by round, and the layer used."""
    import numba

    from backprop import get_backend

    backend = get_backend("numba")
    with tempfile.TemporaryDirectory() as folder:
        serial, parallel, matmul = backend.k, parallel_kernels(Path(folder)), backend.matmul
        variants = {"serial": (serial, matmul), "prange": (parallel, matmul)}
        if importlib.util.find_spec("threadpoolctl") is not None:
            variants["prange, BLAS 1 thread in matmul"] = (parallel, one_blas_thread(matmul))
        rates = interleave(backend, variants, "simpleconvnet", steps, rounds)
    return {"rates": rates, "layer": numba.threading_layer()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int_arg(1, "a positive integer"), default=10,
                   help="training steps per block (default 10)")
    p.add_argument("--rounds", type=int_arg(1, "a positive integer"), default=20,
                   help="blocks per variant (default 20)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.steps, args.rounds)))
        return 0
    print(f"SimpleConvNet training, batch 100, float32, Adam; {os.cpu_count()} CPUs; "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}; "
          f"{args.rounds} rounds of {args.steps} steps a variant\n")
    print("| environment | Numba layer | kernels | median images/s | ratio to serial (median, quartiles) |\n"
          "|---|---|---|---:|---|")
    for name, env in ENVIRONMENTS.items():
        r = subprocess.run([sys.executable, __file__, "--one", "--steps", str(args.steps), "--rounds",
                            str(args.rounds)], env={**os.environ, **env}, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"| {name} | failed: {r.stderr.strip()[-200:]} | | | |")
            continue
        result = json.loads(r.stdout.splitlines()[-1])
        serial = result["rates"]["serial"]
        for variant, got in result["rates"].items():
            ratios = [a / b for a, b in zip(got, serial, strict=True)]
            print(f"| {name} | {result['layer']} | {variant} | {statistics.median(got):,.0f} | "
                  f"{ratio_summary(ratios)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
