"""Data-parallel training on one machine: 1 rank x T BLAS threads against K ranks x T/K threads, and
what the gradients' allreduce costs; then the on-paper scaling to 8 GPUs (NVLink) and 8 nodes (100 Gb/s
Ethernet) from the measured compute per step (bench/results/data-parallel-scaling.md explains the model).

    python bench/data_parallel.py                          # numpy, numba; simpleconvnet, lenet5; 2 cores
    python bench/data_parallel.py --quick                  # a check that it runs, in about a minute
    python bench/data_parallel.py --backends numba --cores 16 --ranks 1,2,4,8,16
    python bench/data_parallel.py --backends cupy --ranks 1    # a GPU's compute per step, for the NVLink rows

Every configuration is ``backprop.fit`` as ``backprop train`` runs it (batch 100 global, float32, Adam, seed 0,
the embedded MNIST subset resident on the backend), in its own job: this script with ``--worker`` as one
process, or under the ``[mpi]`` extra's ``mpiexec -n K``, with ``OPENBLAS_NUM_THREADS`` (and OMP/MKL) at
cores / K. The configurations take turns for ``--rounds`` rounds, so a machine whose speed drifts over
minutes slows all of them alike; images/s is the median of the timed epochs (after one warm-up epoch) of all
rounds, as rank 0's clock sees them (all ranks' images).

Per step, each rank's allreduce of the gradients (one contiguous float32 buffer) is timed inside the step
("in step": it includes waiting for the slowest rank), and after training, alone, back to back ("alone":
the transfer itself). Bytes are those each rank puts into the allreduce; a ring moves 2(K-1)/K of them per
rank.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BATCH = 100
MARK = "DP-JSON "
HERE = Path(__file__).resolve()
# Published per-direction bandwidths and per-hop latencies of the interconnects of the on-paper scaling
# (bench/results/data-parallel-scaling.md): (name, bytes/s, seconds per ring hop, workers).
# NVLink joins the GPUs of one machine, so its rows take a GPU backend's compute; Ethernet joins nodes of either.
LINKS = (("NVLink 4 (H100 SXM, NVSwitch)", 450e9, 2e-6, 8), ("100 Gb/s Ethernet", 12.5e9, 15e-6, 8))
GPU_BACKENDS = {"cupy"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="numpy,numba")
    p.add_argument("--models", default="simpleconvnet,lenet5")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores to share among the ranks")
    p.add_argument("--ranks", default=None, help="rank counts to compare (default: 1 and --cores)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=6000, help="training images an epoch (of the embedded subset)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per job; the first is a warm-up")
    p.add_argument("--allreduces", type=int, default=50, help="allreduces timed alone, after training")
    p.add_argument("--quick", action="store_true", help="1 round of 2 epochs of 1,000 images")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    p.add_argument("--worker", nargs=2, metavar=("BACKEND", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.images, args.epochs, args.allreduces = 1, 1000, 2, 10
    return args


# -- one job (every rank runs this) -------------------------------------------------------------------
def worker(backend_name: str, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    from backprop import SoftmaxCrossEntropy, distributed, get_backend
    from backprop.callbacks import Callback
    from backprop.data import load_mnist_subset
    from backprop.runs import RunConfig, build, loaders
    from backprop.training import fit

    comm = distributed.init()
    backend = get_backend(backend_name, "float32")
    config = RunConfig(model=model_name, backend=backend_name, batch_size=BATCH, train_limit=args.images, seed=0)
    train, _ = loaders(load_mnist_subset(), config, backend)
    model, optimizer = build(config, backend, classes=10)

    calls: list[float] = []
    nbytes = [0]
    average = distributed.GradientAverager.average

    def timed_average(self: Any, share: float) -> None:  # (CPU arrays: the allreduce is done on return)
        t = time.perf_counter()
        average(self, share)
        calls.append(time.perf_counter() - t)
        nbytes[0] = self.nbytes

    distributed.GradientAverager.average = timed_average  # type: ignore[method-assign]

    class Rates(Callback):
        def __init__(self) -> None:
            self.rates: list[float] = []

        def on_epoch_end(self, loop: Any, logs: dict[str, float]) -> None:
            self.rates.append(logs["images_per_s"])

    rates = Rates()
    fit(model, train, loss=SoftmaxCrossEntropy(backend), optimizer=optimizer, epochs=args.epochs, progress=False,
        callbacks=[rates], comm=comm)
    steps_per_epoch = len(train)
    in_step = calls[steps_per_epoch:]  # after the warm-up epoch

    params = model.parameters()
    buffer = backend.zeros((sum(p.size for p in params),))
    reducer = comm.array_comm(backend)
    alone = []
    for _ in range(args.allreduces):
        comm.any(False)  # start together
        t = time.perf_counter()
        reducer.allreduce_(buffer)
        backend.synchronize()
        alone.append(time.perf_counter() - t)
    return {"backend": backend_name, "model": model_name, "ranks": comm.size,
            "threads": os.environ.get("OPENBLAS_NUM_THREADS"), "images_per_s": rates.rates[1:],
            "params": sum(p.size for p in params), "bytes": nbytes[0] or int(buffer.nbytes),
            "allreduce_in_step_s": statistics.median(in_step) if in_step else None,
            "allreduce_alone_s": statistics.median(alone) if comm.size > 1 else None,
            "steps_per_epoch": steps_per_epoch, "comm": reducer.name}


# -- the driver ------------------------------------------------------------------------------------------
def mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.is_file() else "mpiexec"


def job(backend: str, model: str, ranks: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, **{v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    launcher = [mpiexec(), "-n", str(ranks)] if ranks > 1 else []
    argv = [*launcher, sys.executable, str(HERE), "--worker", backend, model, "--images", str(args.images),
            "--epochs", str(args.epochs), "--allreduces", str(args.allreduces)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode or not lines:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[0][len(MARK):])


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rank_counts = [int(r) for r in args.ranks.split(",")] if args.ranks else sorted({1, args.cores})
    configs = [(b, m, k) for m in args.models.split(",") for b in args.backends.split(",") for k in rank_counts]
    merged: dict[tuple[str, str, int], dict[str, Any]] = {}
    for round_ in range(args.rounds):
        for backend, model, ranks in configs:
            r = job(backend, model, ranks, max(1, args.cores // ranks), args)
            print(f"round {round_ + 1}/{args.rounds}: {model} {backend} {ranks} x {r['threads']}: "
                  f"{statistics.median(r['images_per_s']):,.0f} images/s", file=sys.stderr)
            key = (backend, model, ranks)
            if key in merged:
                merged[key]["images_per_s"] += r["images_per_s"]
                for k in ("allreduce_in_step_s", "allreduce_alone_s"):
                    merged[key][k + "_rounds"].append(r[k])
            else:
                merged[key] = {**r, **{k + "_rounds": [r[k]] for k in ("allreduce_in_step_s", "allreduce_alone_s")}}
    return list(merged.values())


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The side-by-side table: images/s per configuration, against the 1-rank row of its backend and model."""
    lines = ["| model | backend | ranks x threads | images/s | vs 1 rank | step ms | allreduce in step (us) | "
             "allreduce alone (us) | bytes per step | alone: bus GB/s |", "| --- | --- | --- | ---: | ---: | ---: | "
             "---: | ---: | ---: | ---: |"]
    single = {(r["backend"], r["model"]): statistics.median(r["images_per_s"]) for r in rows if r["ranks"] == 1}
    for r in rows:
        rate = statistics.median(r["images_per_s"])
        alone = _median(r["allreduce_alone_s_rounds"])
        k = r["ranks"]
        bus = f"{2 * (k - 1) / k * r['bytes'] / alone / 1e9:.2f}" if alone else "-"
        base = single.get((r["backend"], r["model"]))
        lines.append(f"| {r['model']} | {r['backend']} | {k} x {r['threads']} | {rate:,.0f} | "
                     f"{rate / base if base else float('nan'):.2f} | {BATCH / rate * 1e3:.2f} | "
                     f"{_us(_median(r['allreduce_in_step_s_rounds']))} | {_us(alone)} | {r['bytes']:,} | {bus} |")
    return "\n".join(lines)


def ring_seconds(nbytes: int, workers: int, bandwidth: float, hop: float) -> tuple[float, float]:
    """A ring allreduce of ``nbytes`` over ``workers``: (2(N-1)/N x bytes / bandwidth, the same plus
    2(N-1) hops of latency)."""
    transfer = 2 * (workers - 1) / workers * nbytes / bandwidth
    return transfer, transfer + 2 * (workers - 1) * hop


def scaling(rows: list[dict[str, Any]]) -> str:
    """Strong scaling of a global batch B over N workers, without overlap: step(N) = B / N x t_image +
    t_allreduce, against step(1) = B x t_image, with t_image from the 1-rank measurement of each backend."""
    lines = ["| model | compute from | link | N | allreduce (us) | +latency (us) | speedup at B=100 | "
             "at B=1000 | B where N stops paying | B for 50% efficiency |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    singles = [r for r in rows if r["ranks"] == 1]
    for r in singles:
        t_image = 1 / statistics.median(r["images_per_s"])
        for link, bandwidth, hop, workers in LINKS:
            if link.startswith("NVLink") and r["backend"] not in GPU_BACKENDS:
                continue
            transfer, total = ring_seconds(r["bytes"], workers, bandwidth, hop)
            speedup = [b * t_image / (b / workers * t_image + total) for b in (100, 1000)]
            pays = total / (t_image * (1 - 1 / workers))  # B x t (1 - 1/N) > t_allreduce
            half = workers * total / t_image  # B / N x t >= t_allreduce
            lines.append(f"| {r['model']} | {r['backend']} ({BATCH / statistics.median(r['images_per_s']) * 1e3:.2f} "
                         f"ms / 100 images) | {link} | {workers} | {transfer * 1e6:,.1f} | {total * 1e6:,.1f} | "
                         f"{speedup[0]:.2f} | {speedup[1]:.2f} | {pays:,.1f} | {half:,.1f} |")
    if not any(r["backend"] in GPU_BACKENDS for r in singles):
        lines.append("\n(No GPU compute measured, so no NVLink rows: on a GPU machine run "
                     "`python bench/data_parallel.py --backends cupy --ranks 1`.)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = worker(*args.worker, args)
        from backprop import distributed
        if distributed.current().rank == 0:
            print(MARK + json.dumps(result), flush=True)
        return 0
    rows = measure(args)
    print(f"# Data-parallel training, {args.cores} cores, batch {BATCH} (global), {args.images:,} images an epoch, "
          f"{args.rounds} rounds\n")
    print(table(rows))
    print("\nOn paper, from each backend's 1-rank compute per image (bench/results/data-parallel-scaling.md):\n")
    print(scaling(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
