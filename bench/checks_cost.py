"""What do the argument checks of layers and kernels cost? One process trains one model, taking turns
block by block (the order alternates) between the checks as shipped and every check method of
``Backend`` and ``Layer`` swapped for a no-op (put back after each block), so that the machine's drift
hits both alike:

    python bench/checks_cost.py --model simpleconvnet --backend numba --rounds 80

Batch 100, Adam, float32, random data on the backend, 10 steps of the library's train_step a block.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import backprop as bp
from backprop.backends.base import Backend
from backprop.checks import int_arg
from backprop.layers.base import Layer

CHECKS = {Backend: ("_operands", "_integers", "check_array", "_update"), Layer: ("check_input", "check_grad")}


def checks_off(off: bool, shipped: dict[tuple[type, str], Callable[..., Any]]) -> None:
    for (cls, name), method in shipped.items():
        setattr(cls, name, (lambda *args, **kwargs: None) if off else method)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="simpleconvnet", choices=sorted(bp.zoo.MODELS))
    p.add_argument("--backend", default="numba")
    p.add_argument("--rounds", type=int_arg(1, "a positive integer"), default=40)
    args = p.parse_args(argv)
    bp.manual_seed(0)
    model = bp.zoo.build_model(args.model, backend=args.backend)
    loss, opt = bp.SoftmaxCrossEntropy(model.backend), bp.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    data = [(model.backend.asarray(rng.random((100, 1, 28, 28), dtype=np.float32)),
             model.backend.asarray(rng.integers(0, 10, 100))) for _ in range(4)]
    shipped = {(cls, name): getattr(cls, name) for cls, names in CHECKS.items() for name in names}

    def block() -> float:
        t = time.perf_counter()
        for i in range(10):
            bp.train_step(model, loss, opt, *data[i % 4])
        model.backend.synchronize()
        return (time.perf_counter() - t) / 10

    times: dict[bool, list[float]] = {False: [], True: []}
    with bp.targets_checked(loss):
        block()  # warm-up
        try:
            for r in range(args.rounds):
                for off in ((False, True) if r % 2 == 0 else (True, False)):
                    checks_off(off, shipped)
                    times[off].append(block())
        finally:
            checks_off(False, shipped)
    ratios = [on / off for on, off in zip(times[False], times[True], strict=True)]
    print(f"{args.model} on {args.backend}, {args.rounds} rounds of 10 steps: step {min(times[False]) * 1e3:.3f} ms "
          f"with the checks, {min(times[True]) * 1e3:.3f} ms without (best); with / without per round: median "
          f"{statistics.median(ratios):.4f}, best against best {min(times[False]) / min(times[True]):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
