"""What subnormal optimizer state costs: one Adam update of a 4320x100 float32 weight (SimpleConvNet's
Linear) whose momentum holds a given share of subnormal numbers, against the same state with those
entries zero. Why the optimizers store decaying state below the smallest normal number as zero
(``kernels/reference.py: flush_subnormal``):

    python bench/subnormals.py                # numpy and numba, 25% subnormal (as after 5 MNIST epochs)
    python bench/subnormals.py --share 0.5

Each timed call first copies the starting state back into the same arrays (the update flushes what
it finds, so it would otherwise see subnormals only once); the copying alone is timed too and subtracted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from backprop.backends import available_backends, get_backend
from backprop.kernels.reference import adam_scalars


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_update(b, weight: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, flushed: np.ndarray,
                repeat: int) -> tuple[float, float]:
    """Milliseconds of one Adam update on backend ``b`` starting from momentum ``m`` and from ``flushed``."""
    lr_t, eps_t = adam_scalars(1e-3, 0.9, 0.999, 1e-8, 1000)
    work = [np.empty_like(a) for a in (weight, m, v)]  # reused: fresh arrays each call would time page faults

    def reset(start_m: np.ndarray) -> None:
        for dst, src in zip(work, (weight, start_m, v), strict=True):
            np.copyto(dst, src)

    def update(start_m: np.ndarray) -> None:
        reset(start_m)
        b.adam_update(work[0], grad, work[1], work[2], lr_t, 0.9, 0.999, eps_t)

    copies = median_ms(lambda: reset(m), repeat)
    return median_ms(lambda: update(m), repeat) - copies, median_ms(lambda: update(flushed), repeat) - copies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--share", type=float, default=0.25, help="share of momentum entries that are subnormal")
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    shape = (4320, 100)
    tiny = np.finfo(np.float32).tiny
    weight = rng.standard_normal(shape).astype(np.float32) * 0.02
    grad = rng.standard_normal(shape).astype(np.float32) * 1e-3
    m = rng.standard_normal(shape).astype(np.float32) * 1e-4
    v = np.abs(rng.standard_normal(shape)).astype(np.float32) * 1e-6
    sub = rng.random(shape) < args.share
    m[sub] = (rng.random(sub.sum()) * tiny * 0.9).astype(np.float32)  # subnormal momentum...
    grad[sub] = 0.0  # ...of weights whose gradient is zero (a dead input)
    flushed = np.where(sub, np.float32(0), m)
    print(f"Adam update, 4320x100 float32, {sub.mean():.0%} of the momentum subnormal; median of {args.repeat}")
    print("| backend | subnormal state ms | same state, flushed ms | ratio |\n|---|---:|---:|---:|")
    for name in ("numpy", "numba"):
        if available_backends()[name] is not None:
            continue
        slow, fast = time_update(get_backend(name), weight, grad, m, v, flushed, args.repeat)
        print(f"| {name} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
    main()
