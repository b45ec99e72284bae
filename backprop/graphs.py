"""CUDA graphs for training: one whole step captured once, then replayed for every full batch.

On a GPU, Python spends a few microseconds launching each kernel, and a small network's step is a few
dozen launches that each run for about as long: the GPU waits for Python. A CUDA graph records the
launches of one step once (stream capture) and replays them all with a single launch (the tinygrad and
PyTorch ``torch.cuda.graphs`` idea). Replaying is correct only because the step never reads the host
(``training.train_step``), updates every weight, gradient, buffer and optimizer state in place, and reads
what changes from step to step (the learning rate, Adam's bias corrections) from device memory, where
``Optimizer.begin_step`` writes it before each replay.

A replay reuses the captured buffers: each batch is copied into static input buffers first, and the loss
and outputs it returns are overwritten by the next replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from backprop.backends import Array
from backprop.layers.base import Layer
from backprop.losses import Loss
from backprop.optim import Optimizer

WARMUP_STEPS = 3  # eager steps before capture: kernels compiled, cuBLAS set up, optimizer state made

DeviceStep = Callable[[Layer, Loss, Optimizer, Array, Array], tuple[Array, Array]]


def graph_problem(model: Layer) -> str | None:
    """Why ``model``'s training step cannot be captured as a CUDA graph on its backend, or None."""
    backend = model.backend
    if not hasattr(backend.xp, "cuda"):
        return f"CUDA graphs need the cupy backend; this model is on {backend.name!r}"
    random = sorted({type(m).__name__ for m in model.modules() if getattr(m, "random_in_training", False)})
    if random:
        return (f"{', '.join(random)} draws new random numbers every step, and a replayed graph would repeat "
                "the captured ones")
    return None


class CudaGraphStep:
    """A training step on full batches of ``batch_size`` as a CUDA graph: ``step(x, y)`` runs ``warmup``
    eager steps, captures the next full batch's step on a stream of its own with a memory pool of its
    own, and replays it from then on; other batches (the last, partial one) run eagerly. Run the
    training loop inside :meth:`running`, so that the eager work around the steps (batches, metrics) is
    in order with the replays."""

    def __init__(self, device_step: DeviceStep, model: Layer, loss: Loss, optimizer: Optimizer, batch_size: int,
                 warmup: int = WARMUP_STEPS) -> None:
        problem = graph_problem(model)
        if problem is not None:
            raise ValueError(f"cuda_graph=True: {problem}; train without it")
        self.device_step, self.model, self.loss, self.optimizer = device_step, model, loss, optimizer
        self.batch_size, self.warmup = batch_size, warmup
        cuda = model.backend.xp.cuda
        self.stream = cuda.Stream(non_blocking=True)
        self.pool = cuda.MemoryPool()  # the graph's own: nothing allocated outside it reuses its memory
        self.graph: Any = None
        self.eager_steps = 0
        self.replays = 0
        self._key: tuple[Any, ...] | None = None
        self._inputs: tuple[Array, Array] | None = None
        self._outputs: tuple[Array, Array] | None = None

    @property
    def warming_up(self) -> bool:
        """Whether the steps so far were warm-up (compiling, setting up, capturing), not yet training speed."""
        return self.graph is None and self.eager_steps <= self.warmup

    @contextmanager
    def running(self) -> Iterator[None]:
        """The graph's stream as the current one, after the device finished what was queued before (the
        data and state put there on the default stream, which a non-blocking stream does not wait for)."""
        self.model.backend.synchronize()
        with self.stream:
            yield

    def __call__(self, x: Array, y: Array) -> tuple[Array, Array]:
        """One training step on (x, y): (loss, outputs), valid until the next step."""
        key = (x.shape, x.dtype, y.shape, y.dtype)
        with self.stream:
            if self.graph is None and self.eager_steps >= self.warmup and x.shape[0] == self.batch_size:
                self._capture(x, y)
            if self.graph is not None and key == self._key:
                return self._replay(x, y)
            self.eager_steps += 1
            self.optimizer.begin_step()
            return self.device_step(self.model, self.loss, self.optimizer, x, y)

    def _capture(self, x: Array, y: Array) -> None:
        inputs = (x.copy(), y.copy())  # the static input buffers, outside the graph's pool
        with self.model.backend.xp.cuda.using_allocator(self.pool.malloc):
            self.stream.begin_capture()
            try:
                outputs = self.device_step(self.model, self.loss, self.optimizer, *inputs)
            except BaseException:
                with suppress(Exception):  # the step's own error says why; ending the capture may fail too
                    self.stream.end_capture()
                raise
            self.graph = self.stream.end_capture()
        self._key, self._inputs, self._outputs = (x.shape, x.dtype, y.shape, y.dtype), inputs, outputs

    def _replay(self, x: Array, y: Array) -> tuple[Array, Array]:
        assert self._inputs is not None and self._outputs is not None
        static_x, static_y = self._inputs
        static_x[...] = x  # device-to-device copies, in stream order before the replay
        static_y[...] = y
        self.optimizer.begin_step()
        self.graph.launch(self.stream)
        self.replays += 1
        return self._outputs
