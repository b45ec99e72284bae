"""Where a training step's time goes: per layer (forward, backward), loss and optimizer, and per kernel.

The steps are :func:`backprop.training.train_step` itself; the profile wraps the methods it calls on
one model (instance attributes shadowing the class's, removed afterwards) with a clock and a device
synchronization before and after each call. A call made inside another timed call counts for itself
only: the outer one's time is what is left (a pooling kernel built from others, conv2d_forward around
im2col and matmul), so the rows add up to the instrumented step. The synchronizations make profiled
steps slower than plain ones, which are timed too.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from backprop.backends import Backend, get_backend
from backprop.bench.kernels import KERNELS
from backprop.bench.stats import spread
from backprop.model import Sequential


class Recorder:
    """Exclusive seconds per label: a timed call's time less that of the timed calls inside it. A call
    inside one of the same label (a layer's backward calling its backward_params) is not counted again."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._open: list[list[Any]] = [["", 0.0]]  # [label, time of the timed calls inside] of each open call

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            self.calls[label] += self._open[-1][0] != label
            self._open.append([label, 0.0])
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                total = time.perf_counter() - start
                inner = self._open.pop()[1]
                self._open[-1][1] += total
                self.seconds[label] += total - inner
        return timed


@contextmanager
def instrumented(objects: list[tuple[Any, str, str]], recorder: Recorder) -> Iterator[None]:
    """Each (object, method, label) timed into ``recorder`` inside the block, put back after it."""
    with ExitStack() as undo:
        for obj, method, label in objects:
            setattr(obj, method, recorder.wrap(label, getattr(obj, method)))
            undo.callback(delattr, obj, method)
        yield


def layer_methods(model: Sequential, loss: Any, optimizer: Any) -> list[tuple[Any, str, str]]:
    """What train_step calls: each layer's forward and backward (a first layer's backward_params is its
    backward), the loss's forward and backward, the optimizer's two halves (the host's begin_step, the
    device's apply)."""
    found = []
    for i, layer in enumerate(model.layers):
        name = f"{i} {type(layer).__name__}"
        found += [(layer, "forward", f"{name} forward"), (layer, "backward", f"{name} backward"),
                  (layer, "backward_params", f"{name} backward")]
    loss_name = f"loss {type(loss).__name__}"
    return [*found, (loss, "forward", f"{loss_name} forward"), (loss, "backward", f"{loss_name} backward"),
            (optimizer, "begin_step", f"optimizer {type(optimizer).__name__} begin_step"),
            (optimizer, "apply", f"optimizer {type(optimizer).__name__} apply")]


def profile_model(model_name: str, backend_name: str | Backend, steps: int = 10, batch_size: int = 100,
                  warmup: int = 3) -> dict[str, Any]:
    """Per-layer and per-kernel milliseconds of ``steps`` training steps of a zoo model (Adam, float32,
    batches of the embedded MNIST subset), each row with its median per step, spread and share."""
    from backprop.data import load_mnist_subset
    from backprop.losses import SoftmaxCrossEntropy
    from backprop.runs import RunConfig, build, loaders
    from backprop.training import train_step

    backend = get_backend(backend_name, "float32")
    config = RunConfig(model=model_name, dataset="mnist", batch_size=batch_size,
                       train_limit=batch_size * max(1, min(steps, 10)))
    train, _ = loaders(load_mnist_subset(), config, backend)
    batches = list(train)
    model, optimizer = build(config, backend, classes=10)
    loss = SoftmaxCrossEntropy(backend)
    loss.check_values = False  # labels of the embedded subset are in range; no host read per step

    def step(i: int) -> None:
        train_step(model, loss, optimizer, *batches[i % len(batches)])

    for i in range(warmup):  # compile, caches
        step(i)
    plain = []
    for i in range(steps):
        backend.synchronize()
        start = time.perf_counter()
        step(i)
        backend.synchronize()
        plain.append(time.perf_counter() - start)

    def per_step(objects: list[tuple[Any, str, str]]) -> list[dict[str, Any]]:
        samples: dict[str, list[float]] = defaultdict(list)
        calls: dict[str, int] = {}
        for i in range(steps):
            recorder = Recorder(backend.synchronize)
            with instrumented(objects, recorder):
                step(i)
            for label, seconds in recorder.seconds.items():
                samples[label].append(seconds * 1e3)
                calls[label] = recorder.calls[label]
        total = sum(spread(v)["median"] for v in samples.values())
        return [{"name": label, "calls": calls[label], "ms": spread(v), "share": spread(v)["median"] / total}
                for label, v in samples.items()]

    kernels = [(backend, k, k) for k in KERNELS]
    return {"model": model_name, "backend": backend.name, "batch_size": batch_size, "steps": steps,
            "step_ms": spread([s * 1e3 for s in plain]), "layers": per_step(layer_methods(model, loss, optimizer)),
            "kernels": sorted(per_step(kernels), key=lambda r: -r["ms"]["median"])}


def format_profile(result: dict[str, Any]) -> str:
    """The profile as two terminal tables: per layer in step order, per kernel by time."""
    step = result["step_ms"]
    lines = [f"{result['model']} on {result['backend']}, batch {result['batch_size']}, float32, Adam: "
             f"{step['median']:.3f} ms a step (quartiles {step['q1']:.3f}-{step['q3']:.3f}) without the "
             f"profiler, median of {result['steps']} steps"]
    for title, rows in (("per layer", result["layers"]), ("per kernel (own time, nested kernels apart)",
                                                          result["kernels"])):
        width = max(len(r["name"]) for r in rows) + 6
        lines += ["", f"{title}, ms per step (synchronized after every call):",
                  f"  {'':{width}}  {'median':>8}  {'q1-q3':>17}  {'share':>6}"]
        for r in rows:
            name = r["name"] + (f" (x{r['calls']})" if r["calls"] > 1 else "")
            ms = r["ms"]
            lines.append(f"  {name:{width}}  {ms['median']:8.3f}  {ms['q1']:8.3f}-{ms['q3']:<8.3f}  "
                         f"{100 * r['share']:5.1f}%")
        lines.append(f"  {'sum':{width}}  {sum(r['ms']['median'] for r in rows):8.3f}")
    return "\n".join(lines)
