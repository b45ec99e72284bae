"""The GPU job's first stage: does the CuPy backend train on this GPU, agree with NumPy, stay off the
host, and replay a CUDA graph exactly? Seconds, not minutes; every check prints one line and all land in
one JSON file, so that the first GPU run says at once what works:

    python bench/gpu_smoke.py --out DIR      # writes DIR/smoke.json

1. cold start: the CUDA context, then the first use of our kernels (NVRTC compiles them), apart;
2. three SimpleConvNet steps (batch 100, Adam) on cupy and numpy from the same weights and batches:
   losses and weights agree to float32 rounding;
3. three more steps under ``cupyx.allow_synchronize(False)``: no step waits for the device;
4. fit with and without ``cuda_graph=True``, same seed: the same weights (to 1e-5; whether bit for bit
   is reported: cuBLAS promises bit-equal results on one stream only).

Without a GPU the script says so and exits 2 (the emulated device of the test suite is for tests only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backprop import available_backends, get_backend, manual_seed, zoo
from backprop.losses import SoftmaxCrossEntropy, targets_checked
from backprop.optim import Adam
from backprop.training import fit, train_step

BATCH = 100


def _batches(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.random((BATCH, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, BATCH)) for _ in range(n)]


def _model(backend: Any) -> tuple[Any, Any]:
    manual_seed(0)
    model = zoo.simple_conv_net(backend="numpy").to(backend)  # the same initial weights on every backend
    return model, Adam(model.parameters(), lr=1e-3)


def cold_start(backend: Any) -> dict[str, float]:
    """(Run first: it times the CUDA context and our kernels' compilation, which later checks reuse.)"""
    start = time.perf_counter()
    backend.xp.zeros(1).sum()
    backend.synchronize()
    context = time.perf_counter() - start
    start = time.perf_counter()
    backend.relu(backend.zeros((8,)))
    backend.synchronize()
    return {"context_s": round(context, 3), "first_kernels_s (NVRTC)": round(time.perf_counter() - start, 3)}


def agreement(gpu: Any) -> dict[str, float]:
    results = {}
    for name, backend in (("numpy", get_backend("numpy")), ("cupy", gpu)):
        model, opt = _model(backend)
        losses = [float(train_step(model, SoftmaxCrossEntropy(backend), opt, backend.asarray(x), backend.asarray(y))[0])
                  for x, y in _batches(3)]
        results[name] = (losses, [backend.to_numpy(p.data) for p in model.parameters()])
    (l_np, w_np), (l_cp, w_cp) = results["numpy"], results["cupy"]
    out = {"max_loss_rel_diff": float(np.max(np.abs(np.subtract(l_cp, l_np)) / np.abs(l_np))),
           "max_weight_abs_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(w_cp, w_np, strict=True)))}
    assert out["max_loss_rel_diff"] < 1e-4 and out["max_weight_abs_diff"] < 1e-4, out
    return out


def sync_free(backend: Any) -> dict[str, Any]:
    import cupyx

    model, opt = _model(backend)
    loss = SoftmaxCrossEntropy(backend)
    batches = [(backend.asarray(x), backend.asarray(y)) for x, y in _batches(6)]
    for x, y in batches[:3]:  # warm-up: compile, cuBLAS handles, optimizer state; labels checked once
        train_step(model, loss, opt, x, y)
    backend.synchronize()
    start = time.perf_counter()
    with targets_checked(loss), cupyx.allow_synchronize(False):  # as fit runs its steps
        for x, y in batches[3:]:
            train_step(model, loss, opt, x, y)
    queued = time.perf_counter() - start
    backend.synchronize()
    return {"steps": 3, "queue_s": round(queued, 4), "total_s": round(time.perf_counter() - start, 4)}


def graph_equals_eager(backend: Any) -> dict[str, Any]:
    x, y = (np.concatenate(a) for a in zip(*_batches(12), strict=True))
    weights, timing = [], {}
    for graph in (False, True):
        model, opt = _model(backend)
        start = time.perf_counter()
        fit(model, backend.asarray(x), backend.asarray(y), loss=SoftmaxCrossEntropy(backend), optimizer=opt,
            epochs=2, batch_size=BATCH, seed=1, progress=False, cuda_graph=graph)
        backend.synchronize()
        timing["graph_s" if graph else "eager_s"] = round(time.perf_counter() - start, 3)
        weights.append([backend.to_numpy(p.data) for p in model.parameters()])
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(*weights, strict=True))
    # Bit-equal on the emulated device; on a GPU cuBLAS may choose other algorithms on another stream.
    assert diff <= 1e-5, f"graph and eager weights differ by up to {diff}"
    return {"max_weight_abs_diff": diff, "bit_equal": diff == 0.0, **timing}


CHECKS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "cold start": cold_start, "cupy agrees with numpy": agreement, "steps never wait for the device": sync_free,
    "a CUDA graph trains as eager": graph_equals_eager,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("."), help="folder for smoke.json (default: here)")
    args = p.parse_args(argv)
    reason = available_backends()["cupy"]
    if reason is not None:
        print(f"no GPU backend here: {reason}")
        return 2
    report: dict[str, Any] = {}
    gpu = get_backend("cupy")
    for name, check in CHECKS.items():
        try:
            report[name] = {"ok": True, **check(gpu)}
        except Exception as exc:  # every check runs and reports, whatever the others did
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        print(f"{'ok  ' if report[name]['ok'] else 'FAIL'} {name}: "
              f"{ {k: v for k, v in report[name].items() if k not in ('ok', 'trace')} }", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "smoke.json").write_text(json.dumps(report, indent=1))
    return 0 if all(r["ok"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
