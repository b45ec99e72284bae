"""End-to-end training: the zoo's models on every backend asked for, and PyTorch beside them.

For each (implementation, model) and round, one subprocess (``python -m backprop.bench.e2e JOB``,
answering with one JSON line) does, on the embedded MNIST subset with batch 100, float32, Adam lr 1e-3
and seed 0, as ``backprop train`` prepares them (``backprop.runs``):

1. the device (CuPy's or torch's CUDA context) opened and timed apart; every batch moved to the device
   before any clock starts;
2. cold start: the model built and its first step (Numba's compilation or cache load, NVRTC's);
3. in the first round, one epoch over ``train_images`` images then the test accuracy on the 1,000 test
   images, so speed never hides a wrong result; in later rounds a few warm-up steps;
4. ``windows`` timed windows of about ``window_seconds`` each (the step count is calibrated on the
   warm-up), the device synchronized before every clock read.

Our steps are :func:`backprop.training.train_step`, the step ``fit`` runs. PyTorch's networks start
from the same weights (copied from backprop's model built with the same seed) and see the same batches.
Peak host memory is the subprocess's own (VmHWM); peak GPU memory is what each caching allocator
holds (CuPy's pool, ``torch.cuda.max_memory_reserved``).

FLOPs per step count conv and linear layers only: forward = 2 x MACs; backward = the weight gradient of
every layer plus the input gradient of every layer but the first (neither library computes that one).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from backprop.bench.stats import inverted, scaled, spread
from backprop.bench.torch_models import TORCH_ROWS, TorchTrainer
from backprop.layers import Conv2D, Flatten, Linear, MaxPool2D
from backprop.model import Sequential

BATCH = 100
LR = 1e-3
SEED = 0
FULL_MNIST = 60_000
INPUT = (1, 28, 28)
MARK = "E2E-JSON "
WARMUP_STEPS = 5  # in rounds without the accuracy epoch
GRAPH = "-graph"  # cupy-graph: the cupy backend replaying a CUDA graph of the step
GPU_ROWS = {"cupy", f"cupy{GRAPH}", "torch-cuda", "torch-cuda-graph"}
# Each of our implementations is compared with PyTorch on the same device, a graph with a graph.
REFERENCE = {"cupy": "torch-cuda", f"cupy{GRAPH}": "torch-cuda-graph"}


@dataclass
class Job:
    """One subprocess's work: one implementation, one model, one round."""

    impl: str  # a backprop backend, cupy-graph, or a row of TORCH_ROWS
    model: str
    train_images: int
    windows: int
    window_seconds: float
    accuracy: bool = True  # the first round's epoch and test; later rounds warm up instead


@dataclass
class Settings:
    """What ``backprop bench`` trains and how long it times."""

    models: Sequence[str] = ("simpleconvnet", "lenet5", "mlp", "deepconvnet")
    backends: Sequence[str] = ("numpy", "numba")  # and cupy-graph, our step replayed as a CUDA graph
    torch_rows: Sequence[str] = ()
    rounds: int = 3
    windows: int = 5
    window_seconds: float = 0.5
    train_images: int = 6000


# -- FLOPs ------------------------------------------------------------------------------------------
def layer_macs(model: Sequential, shape: tuple[int, int, int] = INPUT) -> list[int]:
    """Multiply-adds of each conv and linear layer for one image, in order, propagating the shape."""
    c, h, w = shape
    macs = []
    for layer in model.layers:
        if isinstance(layer, (Conv2D, MaxPool2D)):
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.pad
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            if isinstance(layer, Conv2D):
                macs.append(h * w * layer.out_channels * layer.in_channels * kh * kw)
                c = layer.out_channels
        elif isinstance(layer, Flatten):
            c, h, w = c * h * w, 1, 1
        elif isinstance(layer, Linear):
            n_in, n_out = layer.W.data.shape
            macs.append(n_in * n_out)
            c, h, w = n_out, 1, 1
    return macs


def step_flops(model: Sequential, batch: int = BATCH) -> int:
    """Forward, weight gradients, and input gradients of all but the first layer (see the docstring)."""
    macs = layer_macs(model)
    return 2 * (3 * sum(macs) - macs[0]) * batch


# -- one job, in its own process --------------------------------------------------------------------
class OursTrainer:
    """backprop on one backend, stepping with :func:`backprop.training.train_step`; ``cupy-graph``:
    the same step captured once as a CUDA graph and replayed (:class:`backprop.graphs.CudaGraphStep`,
    what ``fit(cuda_graph=True)`` runs)."""

    def __init__(self, impl: str) -> None:
        self.name = impl.removesuffix(GRAPH)
        self.graph = impl.endswith(GRAPH)

    def open_device(self) -> None:
        from backprop.backends import get_backend
        self.backend = get_backend(self.name, "float32")
        self.backend.synchronize()
        self.sync = self.backend.synchronize

    def batches(self, host_batches: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        from backprop.checks import check_labels
        out = [(self.backend.asarray(x), self.backend.asarray(y)) for x, y in host_batches]
        for _, y in out:  # once, as fit does; the steps then read nothing back
            check_labels(y, 10, "training labels")
        self.backend.synchronize()  # the copies done before a graph's own stream reads them
        return out

    def build(self, ours: Sequential, lr: float) -> None:
        from backprop.losses import SoftmaxCrossEntropy
        from backprop.optim import Adam
        self.model = ours
        self.loss = SoftmaxCrossEntropy(self.backend)
        self.loss.check_values = False  # the labels were checked once, above
        self.opt = Adam(ours.parameters(), lr=lr)
        if self.graph:
            from backprop.graphs import CudaGraphStep
            from backprop.training import device_step
            self.graph_step = CudaGraphStep(device_step, ours, self.loss, self.opt, BATCH)

    def step(self, x: Any, y: Any) -> None:
        if self.graph:
            self.graph_step(x, y)  # (on its own stream)
            return
        from backprop.training import train_step
        train_step(self.model, self.loss, self.opt, x, y)

    def evaluate(self, batches: list[tuple[Any, Any]]) -> dict[str, float]:
        from backprop.training import evaluate
        total, correct, n = 0.0, 0.0, 0
        for x, y in batches:
            scores = evaluate(self.model, x, y, loss=self.loss)
            total += scores["loss"] * len(y)
            correct += scores["accuracy"] * len(y)
            n += len(y)
        return {"accuracy": correct / n, "loss": total / n}

    def extra(self) -> dict[str, Any]:
        if self.name != "cupy":
            return {}
        # the graph's own pool holds what its replays use
        graph_pool = self.graph_step.pool.total_bytes() if self.graph else 0
        # the pool keeps what it once held, so its size is the high-water mark
        return {"peak_gpu_mb": (self.backend.xp.get_default_memory_pool().total_bytes() + graph_pool) / 2**20}


def peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM, which starts afresh at exec (``ru_maxrss``
    carries the parent's peak over a fork), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: Job) -> dict[str, Any]:
    """Cold start, the accuracy epoch (or warm-up steps), then the timed windows; see the module docstring."""
    from backprop.backends import get_backend
    from backprop.data import load_mnist_subset
    from backprop.runs import RunConfig, build, loaders

    trainer: Any = TorchTrainer(job.impl) if job.impl in TORCH_ROWS else OursTrainer(job.impl)
    clock = time.perf_counter
    config = RunConfig(model=job.model, dataset="mnist", backend="numpy", dtype="float32", epochs=1,
                       batch_size=BATCH, optimizer="adam", lr=LR, seed=SEED, train_limit=job.train_images)
    host = get_backend("numpy", "float32")
    train, test = loaders(load_mnist_subset(), config, host)  # the same batches, scaled alike, for everyone
    t = clock()
    trainer.open_device()
    trainer.sync()
    context = clock() - t
    epoch, tests = trainer.batches(list(train)), trainer.batches(list(test))
    ours, _ = build(config, host, classes=10)  # same seed, same initial weights for every implementation
    if job.impl not in TORCH_ROWS:
        ours.to(trainer.backend)
    trainer.sync()
    t0 = clock()
    trainer.build(ours, LR)
    trainer.step(*epoch[0])
    trainer.sync()
    row: dict[str, Any] = {"cold_start_s": clock() - t0, "context_s": context, "flops_per_step": step_flops(ours)}
    t = clock()
    # the accuracy epoch's other batches, else warm-up steps (also when the epoch is one batch: the
    # windows' length in steps is taken from these)
    warm = epoch[1:] if job.accuracy and len(epoch) > 1 else [epoch[i % len(epoch)] for i in range(1, WARMUP_STEPS + 1)]
    for x, y in warm:
        trainer.step(x, y)
    trainer.sync()
    step_seconds = (clock() - t) / max(1, len(warm))
    if job.accuracy:
        scores = trainer.evaluate(tests)
        row.update(test_acc=scores["accuracy"], test_loss=scores["loss"])
    steps = max(1, math.ceil(job.window_seconds / max(step_seconds, 1e-6)))
    rates, i = [], 0
    for _ in range(job.windows):
        trainer.sync()
        t, images = clock(), 0
        for _ in range(steps):
            x, y = epoch[i % len(epoch)]
            i += 1
            trainer.step(x, y)
            images += len(y)
        trainer.sync()
        rates.append(images / (clock() - t))
    row.update(window_images_per_s=rates, steps_per_window=steps,
               peak_rss_mb=peak_rss_mb(), **trainer.extra())
    return row


def child(job: Job) -> dict[str, Any]:
    """``job`` run in a subprocess of its own, so that its peak memory and its device are its own. It runs
    in an empty folder: ``-m`` puts the working folder first on the import path, where a source checkout's
    ``backprop/`` (which lacks ``backends/`` until installed) would shadow the installed package."""
    with tempfile.TemporaryDirectory() as empty:
        r = subprocess.run([sys.executable, "-m", "backprop.bench.e2e", json.dumps(asdict(job))],
                           capture_output=True, text=True, cwd=empty)
    for line in r.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {"error": (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]}


# -- the driver -------------------------------------------------------------------------------------
def merge(impl: str, model: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from an implementation's rounds: images/s over every window of every round, cold start
    and peak memory over the rounds, accuracy from the first; an error in any round is the row."""
    row: dict[str, Any] = {"impl": impl, "model": model, "device": "gpu" if impl in GPU_ROWS else "cpu"}
    failed = next((r["error"] for r in rounds if "error" in r), None)
    if failed is not None:
        return {**row, "error": failed}
    first = rounds[0]
    windows = [w for r in rounds for w in r["window_images_per_s"]]
    images = spread(windows)
    row.update(images_per_s=images, round_images_per_s=[spread(r["window_images_per_s"])["median"] for r in rounds],
               s_per_epoch=inverted(images, FULL_MNIST),
               gflops=scaled(images, first["flops_per_step"] / BATCH / 1e9),
               cold_start_s=spread([r["cold_start_s"] for r in rounds]),
               context_s=spread([r["context_s"] for r in rounds]),
               peak_rss_mb=spread([r["peak_rss_mb"] for r in rounds]),
               flops_per_step=first["flops_per_step"], test_acc=first["test_acc"], test_loss=first["test_loss"])
    if "peak_gpu_mb" in first:
        row["peak_gpu_mb"] = spread([r["peak_gpu_mb"] for r in rounds])
    row.update({k: first[k] for k in ("torch_version", "torch_threads", "gpu") if k in first})
    return row


def reference(impl: str) -> str | None:
    """The PyTorch row an implementation is compared with: PyTorch on the same device."""
    return None if impl in TORCH_ROWS else REFERENCE.get(impl, "torch")


def run_e2e(settings: Settings, say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every model x implementation, the implementations taking turns in each round (the order reversed
    every other round), merged into one row each, with the ratio to PyTorch on the same device."""
    impls = [*settings.backends, *settings.torch_rows]
    rows: list[dict[str, Any]] = []
    for model in settings.models:
        runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        for r in range(settings.rounds):
            for impl in (impls if r % 2 == 0 else impls[::-1]):
                job = Job(impl, model, settings.train_images, settings.windows, settings.window_seconds,
                          accuracy=r == 0)
                runs[impl].append(child(job))
        merged = {impl: merge(impl, model, got) for impl, got in runs.items()}
        for impl, row in merged.items():
            ref = merged.get(reference(impl) or "")
            if ref is not None and "error" not in ref and "error" not in row:
                row["vs_torch"] = spread([a / b for a, b in zip(row["round_images_per_s"],
                                                                ref["round_images_per_s"], strict=True)])
            say(f"  {model:14s} {impl:17s} " + (f"{row['images_per_s']['median']:,.0f} images/s"
                                               if "error" not in row else f"error: {row['error']}"))
        rows.extend(merged.values())
    return rows


def main(argv: Sequence[str]) -> int:
    """The subprocess: one job, its row printed as one JSON line."""
    row = run_job(Job(**json.loads(argv[0])))
    print(MARK + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
