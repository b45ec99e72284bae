"""Do the Numba kernels of the working tree train faster than those of another revision? Both sets of
kernels run in one process, taking turns block by block on the same model, so that this machine's
drift (up to 2x over minutes here) hits both alike:

    python bench/ab_kernels.py --base HEAD                 # SimpleConvNet: the uncommitted change
    python bench/ab_kernels.py --base 403adb5 --model lenet5 --rounds 30

Why end to end: a kernel that wins alone can lose inside a training step, where its inputs are no
longer in cache and BLAS wants the cores (a faster im2col measured 1.1-1.6x alone and 0.97-1.00x here).

``--base`` is any git revision; its ``kernels/numba_cpu.py`` is loaded from a temporary file, so it
must offer the kernels the working tree's backend calls, with the same arguments. Each round times one
block of ``--steps`` steps with each side (the order alternates), and the ratio of the two blocks is
that round's result; the median and the spread of the ratios are printed, with each side's images/s.
Batch 100, float32, Adam, random MNIST-shaped data, after warm-up steps that compile both sides.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from backprop import Backend, SoftmaxCrossEntropy, get_backend, zoo
from backprop.backends.numba_backend import NumbaBackend
from backprop.bench.report import quartiles
from backprop.bench.stats import spread
from backprop.checks import int_arg
from backprop.losses import targets_checked
from backprop.optim import Adam
from backprop.training import train_step

ROOT = Path(__file__).resolve().parents[1]
KERNELS = "kernels/numba_cpu.py"


def load_module(source: str, folder: Path, name: str) -> ModuleType:
    """``source`` imported as a module of its own, from ``folder/name.py``."""
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernels_source(revision: str) -> str:
    """The text of ``kernels/numba_cpu.py`` as of ``revision``."""
    r = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{KERNELS}"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cannot read {KERNELS} at {revision!r}: {r.stderr.strip()}")
    return r.stdout


def interleave(variants: dict[str, Backend], model_name: str, steps: int, rounds: int) -> dict[str, list[float]]:
    """images/s of each variant (a backend of its own), round by round: each trains its own model (same
    seed, same batches); within a round the variants take turns, in alternating order."""
    rng = np.random.default_rng(0)
    batches = [(rng.random((100, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 100)) for _ in range(10)]
    runs = {}
    for variant, backend in variants.items():
        backend.seed(0)
        model = zoo.MODELS[model_name](backend=backend)
        loss = SoftmaxCrossEntropy(backend)
        runs[variant] = (model, loss, Adam(model.parameters(), lr=1e-3))

    def block(variant: str, n: int) -> float:
        model, loss, opt = runs[variant]
        t = time.perf_counter()
        with targets_checked(loss):  # the labels are in range; steps then read nothing back, as in fit
            for i in range(n):
                train_step(model, loss, opt, *batches[i % len(batches)])
        return n * len(batches[0][1]) / (time.perf_counter() - t)

    for variant in variants:
        block(variant, 5)  # compile (or load from the cache), then settle
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    for r in range(rounds):
        for variant in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            rates[variant].append(block(variant, steps))
    return rates


def ratio_summary(ratios: list[float]) -> str:
    """median (quartiles) of per-round ratios."""
    return quartiles(spread(ratios), ".3f")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision whose kernels to compare against")
    p.add_argument("--model", default="simpleconvnet", choices=sorted(zoo.MODELS))
    p.add_argument("--steps", type=int_arg(1, "a positive integer"), default=10,
                   help="training steps per block (default 10)")
    p.add_argument("--rounds", type=int_arg(1, "a positive integer"), default=20, help="blocks per side (default 20)")
    args = p.parse_args(argv)
    source = kernels_source(args.base)
    get_backend("numba")  # says what to install when Numba is missing
    with tempfile.TemporaryDirectory() as folder:
        base = load_module(source, Path(folder), "numba_cpu_base")
        missing = sorted(name for name in vars(get_backend("numba").k) if not name.startswith("_")
                         and not hasattr(base, name))
        if missing:
            sys.exit(f"{KERNELS} at {args.base!r} lacks {', '.join(missing)}, which this tree's backend calls: "
                     "compare against a revision with the same kernels")
        variants = {"working tree": NumbaBackend(np.float32, seed=0), args.base: NumbaBackend(np.float32, seed=0,
                                                                                             kernels=base)}
        rates = interleave(variants, args.model, args.steps, args.rounds)
    ratios = [w / b for w, b in zip(rates["working tree"], rates[args.base], strict=True)]
    print(f"{args.model}, numba, batch 100, float32, Adam; {args.rounds} rounds of {args.steps} steps a side\n")
    print("| kernels | median images/s |\n|---|---:|")
    for side, got in rates.items():
        print(f"| {side} | {statistics.median(got):,.0f} |")
    print(f"\nworking tree / {args.base}, round by round: median (quartiles) {ratio_summary(ratios)}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
