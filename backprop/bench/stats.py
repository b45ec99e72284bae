"""Spread of repeated timings, the machine they were taken on, and its measured matmul peak.

This project's machines swing by up to 40% from minute to minute, so no figure goes out without its
spread: median and quartiles (and min/max) of every sample taken.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def spread(samples: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, min and max of ``samples`` (one sample gives all five equal)."""
    if not samples:
        raise ValueError("spread of no samples")
    values = sorted(float(v) for v in samples)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "min": values[0], "max": values[-1],
            "n": len(values)}


def scaled(s: dict[str, Any], factor: float) -> dict[str, Any]:
    """A spread multiplied by ``factor`` (> 0): a rate's spread from a time's, GFLOP/s from images/s."""
    return {k: v * factor if k != "n" else v for k, v in s.items()}


def inverted(s: dict[str, Any], numerator: float = 1.0) -> dict[str, Any]:
    """``numerator / x`` of a spread of positive values: quartiles swap ends."""
    return {"median": numerator / s["median"], "q1": numerator / s["q3"], "q3": numerator / s["q1"],
            "min": numerator / s["max"], "max": numerator / s["min"], "n": s["n"]}


def timed_calls(call: Callable[[], object], sync: Callable[[], None], min_seconds: float) -> float:
    """Seconds per call of ``call()``: repeated until ``min_seconds`` have passed (at least once), the
    device synchronized before the clock starts and before it stops."""
    sync()
    start = time.perf_counter()
    calls = 0
    while True:
        call()
        calls += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def matmul_peak(backend: Any, n: int = 2048, repeat: int = 5) -> dict[str, Any]:
    """GFLOP/s of an n x n float32 matrix product on ``backend`` (synchronized), spread of ``repeat``
    after one warm-up: the rate against which a training step's GFLOP/s is read."""
    rng = np.random.default_rng(0)
    a, b = (backend.asarray(rng.random((n, n), dtype=np.float32)) for _ in range(2))
    seconds = [timed_calls(lambda: backend.matmul(a, b), backend.synchronize, 0.0) for _ in range(repeat + 1)][1:]
    return inverted(spread(seconds), 2 * n ** 3 / 1e9)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "processor": cpu or "unknown", "system": platform.system(),
            "python": platform.python_version(), "numpy": np.__version__}


def machine_id(m: dict[str, Any]) -> str:
    """A short file-name-safe label of the machine: ``cpu2-amd-epyc``."""
    cpu = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", "", m["processor"], flags=re.I)
    return f"cpu{m['cpus']}-" + (re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")[:30] or "unknown")
