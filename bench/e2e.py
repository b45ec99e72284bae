"""End-to-end training benchmark: every backprop backend x the zoo models PyTorch can mirror
(simpleconvnet, lenet5, mlp; deepconvnet has Dropout, whose masks differ), with PyTorch alongside.

    python bench/e2e.py                     # all available backends, simpleconvnet, lenet5, mlp
    python bench/e2e.py --quick             # under a minute: fewer steps, accuracy after 1,000 images
    python bench/e2e.py --backends numpy,numba --models mlp --out /tmp/e2e
    python bench/e2e.py --kernels           # then also every kernel on every backend (pytest-benchmark)

For each (backend, model): batch 100, float32, Adam lr 1e-3, seed 0, the embedded MNIST subset held in
memory with pixels scaled to [0, 1] (the data and the model come from ``backprop.runs``, exactly as
``backprop train`` prepares them). Each configuration runs in its own subprocess (this script with the
hidden ``--one BACKEND MODEL`` flag, answering with one JSON line), so the peak host memory
(``ru_maxrss``, which is per process) of one does not leak into the next. In that subprocess:

1. cold start: model build + the first training step (includes Numba JIT compilation or cache load,
   NVRTC compilation), timed after the imports, the CUDA context (timed on its own, ``cuda_context_s``
   in the JSON) and the data loading: every batch of the epoch is on the backend before the clock
   starts, for our backends and for torch alike, and the timed windows cycle through those batches;
2. one epoch over the training set (6,000 images; 1,000 with ``--quick``), then the test accuracy on
   the 1,000 test images, so speed never hides a wrong result;
3. ``--windows`` timed windows of ``--steps`` steps (backend synchronized before each clock read).

The implementations take turns: for each model, ``--rounds`` rounds each run every implementation's
subprocess once, in the same order, so that a machine whose speed drifts over minutes (this project's
2-core VM swings by 40%) slows all of them alike. images/s is the median over the windows of all
rounds, seconds per epoch is 60,000 / images/s (full MNIST); cold start and accuracy come from the
first round, peak memory is the largest seen.

PyTorch (when importable, and unless ``BACKPROP_BENCH_NO_TORCH=1``) trains the same networks with
the same initial weights (copied from backprop's model built with the same seed), the same batches and
Adam: the ``torch`` row on the CPU with ``torch.set_num_threads(os.cpu_count())``, and, when
``torch.cuda.is_available()``, a ``torch-cuda`` row with every batch on the GPU before the clocks start
(CUDA context excluded from the cold start). Each of our rows shows ours / torch images/s against the
torch row of its own device (cupy against torch-cuda, the CPU backends against torch). Peak GPU memory
is memory reserved by each caching allocator: CuPy's memory pool size at the end (the pool keeps freed
blocks, so that is its high-water mark) and ``torch.cuda.max_memory_reserved()``.

FLOPs per training step are counted analytically from conv and linear layers only: forward = 2 x MACs,
backward = the gradient w.r.t. the weights of every layer plus the gradient w.r.t. the input of every
layer but the first (neither backprop nor PyTorch computes that one), so one step = 3 x forward - 2 x
the first layer's MACs. Activations, pooling, loss and the optimizer are not counted. images/s counts
the images of the timed steps (a short last batch counts as short). The machine's float32 matmul peak
is the median rate of a 2048x2048 NumPy matmul; "% matmul peak" is given for the CPU rows only.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 100
LR = 1e-3
SEED = 0
FULL_MNIST = 60_000
MODELS = ("simpleconvnet", "lenet5", "mlp")
MARK = "E2E-JSON "
TORCH_DEVICES = {"torch": "cpu", "torch-cuda": "cuda"}  # row name -> device
GPU_BACKENDS = {"cupy"}  # compared with torch-cuda; the others with torch on the CPU
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="under a minute: 3 windows of 5 steps, accuracy after 1,000 training images")
    p.add_argument("--backends", default=None,
                   help="comma-separated backprop backends (default: every available one)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})")
    p.add_argument("--out", default=str(HERE / "results"), help="output folder (default bench/results/)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window (default 20; quick 5)")
    p.add_argument("--windows", type=int, default=None, help="timed windows per round (default 5; quick 3)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds in which the implementations take turns (default 3; quick 1)")
    p.add_argument("--train-images", type=int, default=None,
                   help="images in the accuracy epoch (default 6,000; quick 1,000)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch (also: BACKPROP_BENCH_NO_TORCH=1)")
    p.add_argument("--kernels", action="store_true",
                   help="also run the kernel micro-benchmarks (bench/test_kernels_bench.py) and print "
                        "their table (needs pytest-benchmark, from the test extra)")
    p.add_argument("--one", nargs=2, metavar=("BACKEND", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (5 if args.quick else 20)
    args.windows = args.windows or (3 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.train_images = args.train_images or (1000 if args.quick else 6000)
    for name in ("steps", "windows", "rounds", "train_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# -- FLOPs ------------------------------------------------------------------------------------------
def layer_macs(model: Any, shape: tuple[int, int, int] = (1, 28, 28)) -> list[int]:
    """Multiply-adds of each conv and linear layer for one image, in order, propagating the shape."""
    from backprop.layers import Conv2D, Flatten, Linear, MaxPool2D
    c, h, w = shape
    flat: int | None = None
    macs = []
    for layer in model.layers:
        if isinstance(layer, (Conv2D, MaxPool2D)):
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.pad
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            if isinstance(layer, Conv2D):
                macs.append(h * w * layer.out_channels * layer.in_channels * kh * kw)
                c = layer.out_channels
        elif isinstance(layer, Flatten):
            flat = c * h * w
        elif isinstance(layer, Linear):
            n_in, n_out = layer.W.data.shape
            assert flat in (None, n_in), (flat, n_in)
            macs.append(n_in * n_out)
            flat = n_out
    return macs


def step_flops(model: Any, batch: int = BATCH) -> int:
    """Forward, weight gradients, and input gradients of all but the first layer (see the docstring)."""
    macs = layer_macs(model)
    return 2 * (3 * sum(macs) - macs[0]) * batch


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of an n x n float32 NumPy matmul, median of ``repeat`` after one warm-up."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


# -- one configuration, in its own process ----------------------------------------------------------
def _config(model: str, backend: str, train_images: int) -> Any:
    from backprop.runs import RunConfig
    return RunConfig(model=model, dataset="mnist", backend=backend, dtype="float32", epochs=1,
                     batch_size=BATCH, optimizer="adam", lr=LR, seed=SEED, train_limit=train_images)


def _cycle(batches: Any):
    while True:
        yield from batches


def run_ours(backend_name: str, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    from backprop import SoftmaxCrossEntropy, get_backend
    from backprop.checks import check_labels
    from backprop.data import load_mnist_subset
    from backprop.losses import targets_checked
    from backprop.runs import build, loaders

    data = load_mnist_subset()
    config = _config(model_name, backend_name, args.train_images)
    clock = time.perf_counter
    t = clock()
    backend = get_backend(backend_name, "float32")  # for cupy: the CUDA context, timed on its own
    backend.synchronize()
    context = clock() - t
    train, test = loaders(data, config, backend)
    epoch = list(train)  # every batch on the backend before any clock starts, as for torch
    check_labels(train.y, 10, "training labels")  # once, as fit does; the steps then skip it
    backend.synchronize()  # (on the GPU, the batches' scaling may still be queued)
    t0 = clock()
    model, opt = build(config, backend, classes=10)
    loss = SoftmaxCrossEntropy(backend)
    with targets_checked(loss):
        return _time_ours(model, loss, opt, epoch, test, t0, context, args)


def _time_ours(model: Any, loss: Any, opt: Any, epoch: list[Any], test: Any, t0: float, context: float,
               args: argparse.Namespace) -> dict[str, Any]:
    from backprop.training import evaluate, train_step

    backend, clock = model.backend, time.perf_counter

    def step(xb: Any, yb: Any) -> None:
        train_step(model, loss, opt, xb, yb)

    step(*epoch[0])
    backend.synchronize()
    cold = clock() - t0
    for xb, yb in epoch[1:]:  # the rest of the epoch: accuracy, and the warm-up
        step(xb, yb)
    backend.synchronize()
    scores = evaluate(model, test, loss=loss)
    test_loss, test_acc = scores["loss"], scores["accuracy"]
    endless = _cycle(epoch)
    rates = []
    for _ in range(args.windows):
        backend.synchronize()
        t, images = clock(), 0
        for _ in range(args.steps):
            xb, yb = next(endless)
            step(xb, yb)
            images += len(xb)
        backend.synchronize()
        rates.append(images / (clock() - t))
    row = {"cold_start_s": cold, "images_per_s": statistics.median(rates), "window_images_per_s": rates,
           "test_acc": test_acc, "test_loss": test_loss, "flops_per_step": step_flops(model)}
    if backend.name == "cupy":  # the pool keeps what it once held, so its size is the high-water mark
        row["peak_gpu_mb"] = backend.xp.get_default_memory_pool().total_bytes() / 2**20
        row["cuda_context_s"] = context
    return row


def torch_model(ours: Any) -> Any:
    """The same network in PyTorch, with ``ours``'s weights (torch's Linear weight is (out, in))."""
    import torch

    from backprop.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, ReLUMaxPool2D
    nn = torch.nn
    get = ours.backend.to_numpy
    layers = []
    for layer in ours.layers:
        if isinstance(layer, Conv2D):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.pad)
            w = get(layer.W.data)
        elif isinstance(layer, Linear):
            m = nn.Linear(*layer.W.data.shape)
            w = get(layer.W.data).T
        elif isinstance(layer, MaxPool2D):
            relu = [nn.ReLU()] if isinstance(layer, ReLUMaxPool2D) else []  # the fused pair
            layers += [*relu, nn.MaxPool2d(layer.kernel_size, layer.stride, layer.pad)]
            continue
        elif isinstance(layer, ReLU):
            layers.append(nn.ReLU())
            continue
        elif isinstance(layer, Flatten):
            layers.append(nn.Flatten())
            continue
        else:
            raise TypeError(f"no PyTorch counterpart for {type(layer).__name__}")
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
            m.bias.copy_(torch.from_numpy(get(layer.b.data).astype(np.float32)))
        layers.append(m)
    return nn.Sequential(*layers)


def run_torch(model_name: str, args: argparse.Namespace, device: str = "cpu") -> dict[str, Any]:
    """The PyTorch row: on the CPU with every core, or on ``device="cuda"`` with the batches moved to
    the GPU before any clock starts and the device synchronized before each clock read."""
    import torch

    from backprop import get_backend
    from backprop.data import load_mnist_subset
    from backprop.runs import build, loaders

    torch.set_num_threads(os.cpu_count() or 1)
    on_gpu = device == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    data = load_mnist_subset()
    config = _config(model_name, "numpy", args.train_images)
    clock = time.perf_counter
    t = clock()
    if on_gpu:
        torch.zeros(1, device=device)  # the CUDA context, timed on its own
        sync()
    context = clock() - t
    host = get_backend("numpy", "float32")
    train, test = loaders(data, config, host)  # the same batches, same [0, 1] scaling
    epoch = [(torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)) for xb, yb in train]
    tests = [(torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)) for xb, yb in test]
    ours, _ = build(config, host, classes=10)  # same seed, same initial weights (not torch's cold start)
    sync()
    t0 = clock()
    model = torch_model(ours).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(xb: Any, yb: Any) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()

    step(*epoch[0])
    sync()
    cold = clock() - t0
    for xb, yb in epoch[1:]:
        step(xb, yb)
    correct, n, total = 0, 0, 0.0
    model.eval()
    with torch.no_grad():
        for xb, y in tests:
            out = model(xb)
            total += float(loss_fn(out, y)) * len(y)
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    model.train()
    endless = _cycle(epoch)
    rates = []
    for _ in range(args.windows):
        sync()
        t, images = clock(), 0
        for _ in range(args.steps):
            xb, yb = next(endless)
            step(xb, yb)
            images += len(yb)
        sync()
        rates.append(images / (clock() - t))
    row = {"cold_start_s": cold, "images_per_s": statistics.median(rates), "window_images_per_s": rates,
           "test_acc": correct / n, "test_loss": total / n, "flops_per_step": step_flops(ours),
           "torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}
    if on_gpu:  # reserved, not just allocated: comparable with the size of CuPy's pool
        row["peak_gpu_mb"] = torch.cuda.max_memory_reserved() / 2**20
        row["cuda_context_s"] = context
        row["gpu"] = torch.cuda.get_device_name()
    return row


def one(backend: str, model: str, args: argparse.Namespace) -> int:
    if backend in TORCH_DEVICES:
        row = run_torch(model, args, TORCH_DEVICES[backend])
    else:
        row = run_ours(backend, model, args)
    row.update(backend=backend, model=model, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(MARK + json.dumps(row), flush=True)
    return 0


# -- the driver -------------------------------------------------------------------------------------
def torch_status() -> tuple[bool, str, bool]:
    """(usable, version or reason, CUDA usable), asked of a subprocess so this process never imports
    torch."""
    if os.environ.get("BACKPROP_BENCH_NO_TORCH", "") not in ("", "0"):
        return False, "disabled by BACKPROP_BENCH_NO_TORCH", False
    r = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__, torch.cuda.is_available())"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["import failed"])[-1]
        return False, f"torch is not importable: {last}", False
    version, cuda = r.stdout.split()[-2:]
    return True, version, cuda == "True"


def child(backend: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", backend, model, "--steps", str(args.steps),
           "--windows", str(args.windows), "--train-images", str(args.train_images)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    err = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return {"backend": backend, "model": model, "error": err}


def kernel_benchmarks(json_path: Path, quick: bool) -> str:
    """Run bench/test_kernels_bench.py into ``json_path``; the backends side by side as Markdown."""
    if importlib.util.find_spec("pytest_benchmark") is None:
        return "kernels: not measured (pytest-benchmark is not installed: pip install -e '.[test]')"
    cmd = [sys.executable, "-m", "pytest", str(HERE / "test_kernels_bench.py"), "-q", "--benchmark-only",
           f"--benchmark-json={json_path}"]
    if quick:
        cmd += ["--benchmark-max-time=0.02", "--benchmark-min-rounds=3"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not json_path.exists():
        return f"kernels: the micro-benchmarks failed:\n{(r.stdout + r.stderr)[-2000:]}"
    runs = json.loads(json_path.read_text())
    for bench in runs["benchmarks"]:  # the raw samples (megabytes for the fast kernels); statistics stay
        bench["stats"].pop("data", None)
    json_path.write_text(json.dumps(runs, indent=2) + "\n")
    sys.path.insert(0, str(HERE))
    try:
        from kernels_table import table as kernel_table
    finally:
        sys.path.remove(str(HERE))
    return kernel_table(json_path)


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same implementation's rounds: the median over all their windows."""
    if any("error" in r for r in rounds):
        return next(r for r in rounds if "error" in r)
    row = dict(rounds[0])
    row["window_images_per_s"] = [w for r in rounds for w in r["window_images_per_s"]]
    row["images_per_s"] = statistics.median(row["window_images_per_s"])
    row["round_images_per_s"] = [r["images_per_s"] for r in rounds]
    for key in ("peak_rss_mb", "peak_gpu_mb"):
        if key in row:
            row[key] = max(r[key] for r in rounds)
    return row


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "processor": cpu or "unknown", "system": platform.system(),
            "python": platform.python_version(), "numpy": np.__version__}


def machine_id(m: dict[str, Any]) -> str:
    cpu = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", "", m["processor"], flags=re.I)
    return f"cpu{m['cpus']}-" + (re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")[:30] or "unknown")


def fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]], peak: float) -> str:
    head = ("| model | backend | cold start s | images/s | s/epoch (60k) | GFLOP/s | % matmul peak | "
            "peak RSS MB | peak GPU MB | test acc | ours/torch |")
    lines = [head, "|" + "|".join(["---"] * 11) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | error: {r['error']} |" + " |" * 8)
            continue
        on_gpu = r["backend"] in GPU_BACKENDS or TORCH_DEVICES.get(r["backend"]) == "cuda"
        share = "-" if on_gpu else f"{100 * r['gflops'] / peak:.1f}"  # the peak is the CPU's
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['cold_start_s']:.2f} | {r['images_per_s']:,.0f} | "
            f"{r['s_per_epoch']:.1f} | {r['gflops']:.1f} | {share} | "
            f"{r['peak_rss_mb']:.0f} | {fmt(r.get('peak_gpu_mb'), '.0f')} | {100 * r['test_acc']:.1f}% | "
            f"{fmt(r.get('vs_torch'), '.2f')} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG chart"
    ok = [r for r in rows if "error" not in r]
    models = list(dict.fromkeys(r["model"] for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    # One panel per model, each on its own linear scale: the MLP runs 10x faster than the CNNs.
    fig, axes = plt.subplots(1, len(models), figsize=(3 * len(models) + 1, 4), squeeze=False)
    colors = {b: f"C{i}" for i, b in enumerate(backends)}
    for ax, model in zip(axes[0], models, strict=True):
        mine = [r for r in ok if r["model"] == model]
        ax.bar([r["backend"] for r in mine], [r["images_per_s"] for r in mine],
               color=[colors[r["backend"]] for r in mine])
        ax.set_title(model, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30)
    axes[0][0].set_ylabel("training images/s (batch 100, float32)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart: {path}"


def main(args: argparse.Namespace) -> int:
    if args.one:
        return one(*args.one, args)
    import backprop
    available = {k: v for k, v in backprop.available_backends().items()}
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        for b in backends:
            if b not in available:
                sys.exit(f"unknown backend {b!r}: choose from {', '.join(available)}")
    else:
        backends = [b for b, why in available.items() if why is None]
    skipped = {b: why for b, why in available.items() if b in backends and why is not None}
    backends = [b for b in backends if b not in skipped]
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            sys.exit(f"unknown model {m!r}: choose from {', '.join(MODELS)}")
    use_torch, torch_info, torch_cuda = (False, "disabled by --no-torch", False) if args.no_torch else torch_status()
    torch_rows = ["torch", "torch-cuda"] if torch_cuda else ["torch"]

    started = time.time()
    m = machine()
    peak = matmul_peak()
    print(f"machine: {m['cpus']} CPUs, {m['processor']}; float32 matmul peak (2048^2 NumPy) {peak:.1f} GFLOP/s")
    for b, why in skipped.items():
        print(f"backend {b} skipped: {why}")
    cuda = ("; CUDA: " + ("yes, torch-cuda rows too" if torch_cuda else "no GPU, CPU rows only")) if use_torch else ""
    print(f"torch: {torch_info if use_torch else 'not measured (' + torch_info + ')'}{cuda}")
    if args.quick:
        print(f"--quick: accuracy after {args.train_images:,} training images (one partial epoch), "
              f"{args.windows} windows of {args.steps} steps")

    rows: list[dict[str, Any]] = []
    for model in models:
        names = backends + (torch_rows if use_torch else [])
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for _ in range(args.rounds):  # the implementations take turns
            for name in names:
                runs[name].append(child(name, model, args))
        mine = {name: merge(rounds) for name, rounds in runs.items()}
        for b in backends:
            r, reference = mine[b], mine.get("torch-cuda" if b in GPU_BACKENDS else "torch")
            if reference is not None and "error" not in reference and "error" not in r:
                r["vs_torch"] = r["images_per_s"] / reference["images_per_s"]
        rows.extend(mine.values())
        for r in mine.values():
            print(f"  {model:14s} {r['backend']:10s} " + (f"{r['images_per_s']:,.0f} images/s" if "error" not in r
                                                         else f"error: {r['error']}"), flush=True)
    for r in rows:
        if "error" not in r:
            r["s_per_epoch"] = FULL_MNIST / r["images_per_s"]
            r["gflops"] = r["flops_per_step"] * r["images_per_s"] / BATCH / 1e9

    md = table(rows, peak)
    print()
    print(md)
    notes = ("FLOPs: conv + linear only, forward = 2 x MACs, backward = 2 x forward less the first layer's input "
             "gradient, which no implementation computes. % matmul peak: against the CPU's NumPy matmul, CPU rows "
             "only. "
             f"Accuracy: one epoch over {args.train_images:,} training images of the embedded subset, "
             "tested on its 1,000 test images." + (" (--quick: a partial epoch.)" if args.quick else ""))
    print("\n" + notes)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{machine_id(m)}-e2e" + ("-quick" if args.quick else "")
    kernels_md = ""
    if args.kernels:
        kernels_md = ("\n\nKernel medians (ms) and speedups over the NumPy reference "
                      f"(JSON: {stem}-kernels.json):\n\n" + kernel_benchmarks(out / f"{stem}-kernels.json", args.quick))
        print(kernels_md)
    result = {
        "machine": m, "matmul_peak_gflops": peak, "quick": args.quick, "batch_size": BATCH, "dtype": "float32",
        "optimizer": f"adam lr={LR}", "seed": SEED, "steps_per_window": args.steps, "windows": args.windows,
        "rounds": args.rounds,
        "accuracy_train_images": args.train_images, "flops_convention": notes.split(" Accuracy")[0],
        "backends": backends, "skipped_backends": skipped, "models": models,
        "torch": {"available": use_torch, "info": torch_info, "cuda": torch_cuda}, "rows": rows,
        "seconds": time.time() - started, "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(md + "\n\n" + notes + kernels_md + "\n")
    print(f"\nwrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    print(plot(rows, out / f"{stem}.png", f"{m['processor']}, {m['cpus']} CPUs - {stem}"))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
