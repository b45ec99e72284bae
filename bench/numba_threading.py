"""How should the Numba backend use the cores? End-to-end SimpleConvNet training steps with the
shipped serial kernels and with the same kernels as ``prange`` loops, side by side in one process:

    python bench/numba_threading.py            # every environment below, 20 rounds each

One subprocess per environment (a thread pool's settings are fixed when it starts): Numba's default
threading layer as it comes (OpenMP threads spin for a while after each kernel), OpenMP told to sleep
at once (OMP_WAIT_POLICY=PASSIVE), Numba's workqueue layer, and OpenBLAS held to one thread. Inside
each, the kernel variants take turns block by block, so that this machine's drift (up to 2x over
minutes) hits them alike, and each round's ratio to the serial block of the same round is reported:

- ``serial``: the backend as shipped; the cores belong to BLAS between kernels;
- ``prange``: the same kernels compiled again with ``parallel=True``, so that their ``prange`` loops
  over images and elements run on Numba's thread pool;
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
from types import FunctionType, ModuleType
from typing import Any

import numpy as np
from ab_kernels import interleave, ratio_summary

from backprop.backends.numba_backend import NumbaBackend
from backprop.checks import int_arg

ENVIRONMENTS = {
    "as it comes": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "NUMBA_THREADING_LAYER=workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
    "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"},
}


def parallel_kernels() -> ModuleType:
    """The shipped kernels compiled again with ``parallel=True`` (under the threading layer
    NUMBA_THREADING_LAYER names, or Numba's default), as a module of their own; the Python functions
    that pick a kernel are rebound to it. Compiled on first use and not cached."""
    import numba
    from numba.core.registry import CPUDispatcher

    from backprop.kernels import numba_cpu

    module = ModuleType("numba_cpu_parallel")
    module.__dict__.update(vars(numba_cpu))
    for name, obj in vars(numba_cpu).items():
        if isinstance(obj, CPUDispatcher) and obj.targetoptions.get("inline", "never") == "never":
            options = {k: v for k, v in obj.targetoptions.items() if k not in ("cache", "nopython")}
            module.__dict__[name] = numba.njit(parallel=True, **options)(obj.py_func)
        elif isinstance(obj, FunctionType) and obj.__module__ == numba_cpu.__name__:
            module.__dict__[name] = FunctionType(obj.__code__, module.__dict__, name, obj.__defaults__,
                                                 obj.__closure__)
    return module


class BlasAside(NumbaBackend):
    """The Numba backend with BLAS held to one thread during its matrix products only (threadpoolctl),
    so that BLAS's and Numba's pools never hold the cores at once."""

    def __init__(self, kernels: ModuleType) -> None:
        from threadpoolctl import ThreadpoolController
        super().__init__(np.float32, seed=0, kernels=kernels)
        self.blas = ThreadpoolController().select(user_api="blas").lib_controllers

    def _matmul(self, a: Any, b: Any, out: Any | None = None) -> Any:
        before = [lib.num_threads for lib in self.blas]
        for lib in self.blas:
            lib.set_num_threads(1)
        try:
            return super()._matmul(a, b, out)
        finally:
            for lib, count in zip(self.blas, before, strict=True):
                lib.set_num_threads(count)


def one(steps: int, rounds: int) -> dict:
    """This process's environment: images/s of every variant, round by round, and the layer used."""
    import numba

    parallel = parallel_kernels()
    variants = {"serial": NumbaBackend(np.float32, seed=0),
                "prange": NumbaBackend(np.float32, seed=0, kernels=parallel)}
    if importlib.util.find_spec("threadpoolctl") is not None:
        variants["prange, BLAS 1 thread in matmul"] = BlasAside(parallel)
    rates = interleave(variants, "simpleconvnet", steps, rounds)
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
