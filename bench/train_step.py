"""Time full SimpleConvNet training steps: backprop vs the classic book code vs PyTorch, side by side.

SimpleConvNet (from "Deep Learning from Scratch"): Conv 30@5x5 (stride 1, pad 0) on 1x28x28 - ReLU -
MaxPool 2x2 stride 2 - Linear 4320->100 - ReLU - Linear 100->10, softmax cross-entropy, Adam lr 1e-3,
float32. One step is forward, loss, backward and the Adam update, on random MNIST-shaped data (no
dataset files needed). After ``--warmup`` steps, ``--repeat`` windows of ``--steps`` steps are timed;
the implementations take turns window by window, so machine noise hits them alike, and the median
images/s of each is reported.

    python bench/train_step.py                      # backprop's NumPy backend only
    python bench/train_step.py --book --torch       # and the book's code and PyTorch, same run
    python bench/train_step.py --profile            # per-layer and per-kernel time of one step
    python bench/train_step.py --blas-threads 1     # OPENBLAS_NUM_THREADS for NumPy (default: as set)

``--book`` is a compact, faithful reimplementation of the book's im2col (a kh x kw loop filling a
(N, C, KH, KW, OH, OW) array, then a transposed copy), col2im (the same loop, scatter-adding), max
pooling (im2col, then argmax/max over the (N*OH*OW*C, KH*KW) matrix, backward by scattering into a
zero matrix and col2im), ReLU by boolean masks and its Adam; unlike the book, every array is float32
(the book's ``np.zeros`` allocate float64, which would make it slower still), so both sides compute in
the same precision. All implementations start from backprop's initial weights and see the same
batches; the losses of the warm-up steps are printed, so a wrong gradient shows up as diverging losses.

Timings on a shared 2-core machine are fragile: with 2 OpenBLAS threads, any other busy process
makes BLAS calls stall (its threads spin-wait for the busy core), so the script reports how many
cores other processes kept busy while it timed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="training steps per timed window (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--batch-size", type=int, default=100, help="images per step (default 100)")
    p.add_argument("--backend", default="numpy",
                   help="backprop backends, comma-separated, timed side by side (default numpy)")
    p.add_argument("--repeat", type=int, default=5, help="timed windows; the median is reported (default 5)")
    p.add_argument("--book", action="store_true", help="also time the classic book implementation")
    p.add_argument("--torch", action="store_true", help="also time PyTorch on the CPU (if importable)")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, profile max(--steps, 10) more steps: time of each layer's forward "
                        "and backward, the loss and the optimizer step, and of every backend kernel")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="set OPENBLAS_NUM_THREADS/OMP_NUM_THREADS before NumPy loads")
    p.add_argument("--pause", type=float, default=0.3,
                   help="seconds to sleep before each timed window, so that the idle BLAS/OpenMP threads "
                        "of the implementation timed before it stop spinning (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.blas_threads is not None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402  (after the thread variables are set)

import backprop  # noqa: E402
from backprop.checks import check_labels  # noqa: E402
from backprop.training import train_step  # noqa: E402

# --------------------------------------------------------------------------------------------------
# backprop
# --------------------------------------------------------------------------------------------------


def build_ours(backend: str, seed: int) -> tuple[Any, Any, Any]:
    backprop.manual_seed(seed)
    model = backprop.zoo.simple_conv_net(backend=backprop.get_backend(backend, "float32"))
    loss = backprop.SoftmaxCrossEntropy(model.backend)
    opt = backprop.Adam(model.parameters(), lr=1e-3)
    return model, loss, opt


class Ours:
    name = "backprop"

    def __init__(self, backend: str, seed: int, data: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.model, self.loss, self.opt = build_ours(backend, seed)
        self.backend = self.model.backend
        self.name = f"backprop {self.backend.name}"
        for _, y in data:  # the labels, checked once as fit does; the steps then read nothing back
            check_labels(y, 10, "labels")
        self.loss.check_values = False
        self.data = [(self.backend.asarray(x), self.backend.asarray(y)) for x, y in data]
        self.i = 0

    def weights(self) -> dict[str, np.ndarray]:
        """The initial weights as host float32 arrays (W1 is OIHW, W2/W3 are (in, out))."""
        layers = self.model.layers
        get = self.backend.to_numpy
        return {"W1": get(layers[0].W.data), "b1": get(layers[0].b.data), "W2": get(layers[3].W.data),
                "b2": get(layers[3].b.data), "W3": get(layers[5].W.data), "b3": get(layers[5].b.data)}

    def batch(self) -> tuple[Any, Any]:
        self.i = (self.i + 1) % len(self.data)
        return self.data[self.i]

    def step(self) -> Any:
        """The library's training step; returns the loss as a 0-d backend array."""
        return train_step(self.model, self.loss, self.opt, *self.batch())[0]

    def sync(self) -> None:
        self.backend.synchronize()

    def profiled_step(self, rec: Callable[[str, float], None]) -> None:
        """One step with each layer's forward/backward, the loss and the optimizer timed apart."""
        x, y = self.batch()
        sync, clock = self.sync, time.perf_counter
        layers = self.model.layers  # forward and backward as Sequential runs them
        for i, layer in enumerate(layers):
            sync()
            t = clock()
            x = layer.forward(x)
            sync()
            rec(f"{i} {type(layer).__name__} forward", clock() - t)
        t = clock()
        float(self.loss.forward(x, y))
        dout = self.loss.backward()
        sync()
        rec("loss forward+backward", clock() - t)
        for i in reversed(range(len(layers))):
            t = clock()
            if i == 0:
                layers[0].backward_params(dout)  # no input gradient for the first layer
                name = f"0 {type(layers[0]).__name__} backward (parameters only)"
            else:
                dout = layers[i].backward(dout)
                name = f"{i} {type(layers[i]).__name__} backward"
            sync()
            rec(name, clock() - t)
        t = clock()
        self.opt.step()
        sync()
        rec("optimizer step (Adam)", clock() - t)

    def instrument_kernels(self, rec: Callable[[str, float], None]) -> Callable[[], None]:
        """Time every backend kernel call (instance attributes shadow the class methods)."""
        backend = self.backend
        names = ["matmul", "im2col", "col2im", "maxpool2d", "maxpool2d_relu", "maxpool2d_backward",
                 "maxpool2d_relu_backward", "relu", "relu_backward",
                 "add_bias", "bias_grad", "softmax_cross_entropy", "adam_update"]

        depth = [0]  # a kernel built from others (the folded pooling ones) is timed once, as itself

        def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def timed(*a: Any, **k: Any) -> Any:
                if depth[0]:
                    return fn(*a, **k)
                backend.synchronize()
                t = time.perf_counter()
                depth[0] += 1
                try:
                    r = fn(*a, **k)
                finally:
                    depth[0] -= 1
                backend.synchronize()
                rec(f"{name}", time.perf_counter() - t)
                return r
            return timed

        for name in names:
            setattr(backend, name, wrap(name, getattr(backend, name)))

        def undo() -> None:
            for name in names:
                delattr(backend, name)
        return undo


# --------------------------------------------------------------------------------------------------
# The book's code ("Deep Learning from Scratch", common/util.py, layers.py, optimizer.py), float32
# --------------------------------------------------------------------------------------------------


def book_im2col(input_data: np.ndarray, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0):
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w), dtype=input_data.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def book_col2im(col: np.ndarray, input_shape: tuple[int, ...], filter_h: int, filter_w: int,
                stride: int = 1, pad: int = 0) -> np.ndarray:
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


class BookConvolution:
    def __init__(self, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> None:
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x: np.ndarray) -> np.ndarray:
        FN, C, FH, FW = self.W.shape
        N, C, H, W = x.shape
        out_h = 1 + int((H + 2 * self.pad - FH) / self.stride)
        out_w = 1 + int((W + 2 * self.pad - FW) / self.stride)
        col = book_im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        out = out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
        self.x, self.col, self.col_W = x, col, col_W
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout)
        self.dW = self.dW.transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        return book_col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)


class BookPooling:
    def __init__(self, pool_h: int, pool_w: int, stride: int = 1, pad: int = 0) -> None:
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x: np.ndarray) -> np.ndarray:
        N, C, H, W = x.shape
        out_h = int(1 + (H - self.pool_h) / self.stride)
        out_w = int(1 + (W - self.pool_w) / self.stride)
        col = book_im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)
        arg_max = np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        out = out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
        self.x, self.arg_max = x, arg_max
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        return book_col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)


class BookRelu:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout[self.mask] = 0
        return dout


class BookAffine:
    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W, self.b = W, b

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


def book_softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def book_cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class BookSoftmaxWithLoss:
    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        self.t = t
        self.y = book_softmax(x)
        return book_cross_entropy_error(self.y, self.t)

    def backward(self, dout: float = 1) -> np.ndarray:
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx / batch_size


class BookAdam:
    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter, self.m, self.v = 0, None, None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        # a Python float: np.sqrt would give a float64 scalar, which makes every update below float64
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params.keys():
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


class Book:
    """SimpleConvNet as the book builds it, in float32, starting from backprop's initial weights."""

    name = "book"

    def __init__(self, args: argparse.Namespace, data: list[tuple[np.ndarray, np.ndarray]],
                 weights: dict[str, np.ndarray]) -> None:
        self.params = {k: np.array(v, dtype=np.float32) for k, v in weights.items()}
        p = self.params
        self.layers = {"Conv1": BookConvolution(p["W1"], p["b1"], 1, 0), "Relu1": BookRelu(),
                       "Pool1": BookPooling(2, 2, stride=2), "Affine1": BookAffine(p["W2"], p["b2"]),
                       "Relu2": BookRelu(), "Affine2": BookAffine(p["W3"], p["b3"])}
        self.last_layer = BookSoftmaxWithLoss()
        self.opt = BookAdam(lr=1e-3)
        self.data = data
        self.i = 0

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        self.i = (self.i + 1) % len(self.data)
        return self.data[self.i]

    def grads(self) -> dict[str, np.ndarray]:
        L = self.layers
        return {"W1": L["Conv1"].dW, "b1": L["Conv1"].db, "W2": L["Affine1"].dW, "b2": L["Affine1"].db,
                "W3": L["Affine2"].dW, "b3": L["Affine2"].db}

    def step(self) -> float:
        x, t = self.batch()
        for layer in self.layers.values():
            x = layer.forward(x)
        value = float(self.last_layer.forward(x, t))
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        self.opt.update(self.params, self.grads())
        return value

    def sync(self) -> None:
        pass

    def profiled_step(self, rec: Callable[[str, float], None]) -> None:
        x, t = self.batch()
        clock = time.perf_counter
        names = list(self.layers)
        for name in names:
            start = clock()
            x = self.layers[name].forward(x)
            rec(f"{name} forward", clock() - start)
        start = clock()
        float(self.last_layer.forward(x, t))
        dout = self.last_layer.backward(1)
        rec("loss forward+backward", clock() - start)
        for name in reversed(names):
            start = clock()
            dout = self.layers[name].backward(dout)
            rec(f"{name} backward", clock() - start)
        start = clock()
        self.opt.update(self.params, self.grads())
        rec("optimizer step (Adam)", clock() - start)


# --------------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------------


class Torch:
    name = "torch"

    def __init__(self, args: argparse.Namespace, data: list[tuple[np.ndarray, np.ndarray]],
                 weights: dict[str, np.ndarray]) -> None:
        import torch
        torch.set_num_threads(args.torch_threads)
        nn = torch.nn
        self.torch = torch
        self.model = nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(4320, 100), nn.ReLU(), nn.Linear(100, 10))
        with torch.no_grad():  # the same initial weights as backprop's (torch's Linear is (out, in))
            for i, (w, b) in zip((0, 4, 6), (("W1", "b1"), ("W2", "b2"), ("W3", "b3")), strict=True):
                weight = weights[w] if i == 0 else weights[w].T
                self.model[i].weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                self.model[i].bias.copy_(torch.from_numpy(weights[b]))
        self.loss = nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.data = [(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))) for x, y in data]
        self.i = 0
        self.name = f"torch {torch.__version__} ({args.torch_threads} threads)"

    def step(self) -> float:
        self.i = (self.i + 1) % len(self.data)
        x, y = self.data[self.i]
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(x), y)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def sync(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def make_data(batch: int, seed: int, batches: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch))
            for _ in range(batches)]


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have been busy since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def time_window(impl: Any, steps: int, others: list[float], pause: float = 0.0) -> float:
    """Seconds for ``steps`` steps; appends the CPU time other processes took meanwhile (in cores).

    OpenBLAS and OpenMP worker threads spin for a while after their last call before they sleep; on a
    2-core machine they would steal a core from whatever runs next, so a window starts after ``pause``.
    """
    time.sleep(pause)
    impl.sync()
    busy0, own0 = busy_cpu_seconds(), os.times()
    start = time.perf_counter()
    for _ in range(steps):
        impl.step()
    impl.sync()
    elapsed = time.perf_counter() - start
    busy1, own1 = busy_cpu_seconds(), os.times()
    if busy0 is not None and busy1 is not None:
        own = (own1.user - own0.user) + (own1.system - own0.system)
        others.append(max(0.0, (busy1 - busy0) - own) / elapsed)
    return elapsed


def print_profile(title: str, samples: dict[str, list[float]], total_label: str = "sum") -> None:
    rows = [(name, statistics.median(v) * 1e3, len(v)) for name, v in samples.items()]
    total = sum(ms for _, ms, _ in rows)
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}")
    print(f"  {'':{width}}  {'ms/step':>8}  {'share':>6}")
    for name, ms, _ in rows:
        print(f"  {name:{width}}  {ms:8.3f}  {100 * ms / total:5.1f}%")
    print(f"  {total_label:{width}}  {total:8.3f}")


def profile(impl: Any, steps: int) -> None:
    per_layer: dict[str, list[float]] = defaultdict(list)
    for _ in range(steps):
        impl.profiled_step(lambda k, v: per_layer[k].append(v))
    print_profile(f"{impl.name}: per layer (median of {steps} steps)", per_layer)
    if hasattr(impl, "instrument_kernels"):
        calls: dict[str, list[float]] = defaultdict(list)
        per_step: dict[str, list[float]] = defaultdict(list)
        undo = impl.instrument_kernels(lambda k, v: calls[k].append(v))
        try:
            for _ in range(steps):
                calls.clear()
                impl.step()
                for k, v in calls.items():
                    per_step[f"{k} (x{len(v)})"].append(sum(v))
        finally:
            undo()
        print_profile(f"{impl.name}: per kernel, all calls in one step (median of {steps} steps)",
                      per_step, "sum of kernels")


def main(args: argparse.Namespace) -> int:
    data = make_data(args.batch_size, args.seed)
    backends = args.backend.split(",")
    impls: list[Any] = [Ours(name, args.seed, data) for name in backends]
    ours = impls[0]
    if args.book:
        impls.append(Book(args, data, ours.weights()))
    if args.torch:
        try:
            impls.append(Torch(args, data, ours.weights()))
        except ImportError:
            print("torch is not importable here: skipping --torch", file=sys.stderr)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"SimpleConvNet training step, batch {args.batch_size}, float32; backends {backends}; "
          f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={threads}, {os.cpu_count()} CPUs")
    print(f"warm-up {args.warmup} steps, then {args.repeat} windows of {args.steps} steps each, "
          "implementations interleaved")
    # Warm-up; all start from the same weights and see the same batches, so their first losses agree
    # (to float32 rounding, and Adam's eps: 1e-8 here and in torch, 1e-7 in the book).
    first_step = {}
    for impl in impls:  # the first step compiles JIT kernels (Numba) or loads them from the cache
        start = time.perf_counter()
        impl.step()
        impl.sync()
        first_step[impl.name] = time.perf_counter() - start
    print("first step (JIT compile or cache load included): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in first_step.items()))
    first_losses = {impl.name: [float(impl.step()) for _ in range(args.warmup)] for impl in impls}
    if args.warmup:
        print("losses of the warm-up steps (same weights, same batches):")
        for name, losses in first_losses.items():
            print(f"  {name:32}  " + " ".join(f"{v:.5f}" for v in losses[:5]))
    rates: dict[str, list[float]] = {impl.name: [] for impl in impls}
    others: list[float] = []
    for _ in range(args.repeat):
        for impl in impls:
            rates[impl.name].append(args.steps * args.batch_size
                                     / time_window(impl, args.steps, others, args.pause))
    base = statistics.median(rates[ours.name])
    print(f"\n  {'implementation':32}  {'median img/s':>12}  {'min':>8}  {'max':>8}  {'ours/this':>9}")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:32}  {med:12,.0f}  {min(r):8,.0f}  {max(r):8,.0f}  {base / med:9.2f}x")
    if others:
        print(f"\nother processes kept {statistics.median(others):.2f} cores busy while timing (median over "
              f"windows, max {max(others):.2f}); above ~0.1 the numbers are disturbed, with 2 BLAS "
              "threads badly so")
    if args.profile:
        for impl in impls:
            if hasattr(impl, "profiled_step"):
                profile(impl, max(args.steps, 10))
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
