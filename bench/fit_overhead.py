"""Does ``fit`` train as fast as a bare loop of ``train_step`` over the same batches?

Both train one model (784-100-100-10 MLP, batch 100, Adam, float32) on random MNIST-shaped data kept
on the backend, taking turns epoch by epoch in one process (the order alternates each round), so this
machine's drift hits both alike; each round's ratio is fit's images/s over the bare loop's:

    python bench/fit_overhead.py --backends numba,numpy --rounds 15
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import backprop as bp
from backprop.bench.report import quartiles
from backprop.bench.stats import spread
from backprop.checks import int_arg
from backprop.losses import targets_checked
from backprop.training import train_step


def mlp(backend: bp.Backend) -> bp.Sequential:
    bp.manual_seed(0)
    return bp.zoo.mlp(backend=backend)


def rates(backend_name: str, images: int, rounds: int) -> tuple[list[float], list[float]]:
    """images/s of fit and of the bare loop, round by round."""
    backend = bp.get_backend(backend_name)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (images, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, images)
    loader = bp.DataLoader(x, y, batch_size=100, seed=0, backend=backend, scale=1 / 255, resident=True)
    model = mlp(backend)
    loss, opt = bp.SoftmaxCrossEntropy(backend), bp.Adam(model.parameters(), lr=1e-3)

    def with_fit() -> None:
        model.fit(loader, loss=loss, optimizer=opt, epochs=1, progress=False)

    def bare() -> None:
        with targets_checked(loss):
            for xb, yb in loader.batches(loader.order()):
                train_step(model, loss, opt, xb, yb)

    def timed(run: object) -> float:
        backend.synchronize()
        t = time.perf_counter()
        run()  # type: ignore[operator]
        backend.synchronize()
        return images / (time.perf_counter() - t)

    with_fit(), bare()  # warm-up: compile, caches
    fits, bares = [], []
    for r in range(rounds):
        if r % 2:
            bares.append(timed(bare))
            fits.append(timed(with_fit))
        else:
            fits.append(timed(with_fit))
            bares.append(timed(bare))
    return fits, bares


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="numba,numpy", help="comma-separated (default numba,numpy)")
    p.add_argument("--images", type=int_arg(100, "an integer >= 100"), default=6000, help="per epoch (default 6000)")
    p.add_argument("--rounds", type=int_arg(1, "a positive integer"), default=15, help="default 15")
    args = p.parse_args(argv)
    print(f"MLP 784-100-100-10, batch 100, Adam, float32, {args.images} images an epoch, {args.rounds} rounds; "
          "median (quartiles) over rounds\n")
    print("| backend | fit images/s | bare loop images/s | fit / bare per round |")
    print("|---|---:|---:|---:|")
    for name in args.backends.split(","):
        fits, bares = rates(name.strip(), args.images, args.rounds)
        ratios = [f / b for f, b in zip(fits, bares, strict=True)]
        print(f"| {name} | {quartiles(spread(fits))} | {quartiles(spread(bares))} | "
              f"{quartiles(spread(ratios), '.3f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
