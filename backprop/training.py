"""Training: one step (:func:`train_step`), one loop (:func:`fit`), one :func:`evaluate`, :func:`predict`.

The step never reads a value back to the host: on a GPU every such read waits for the device, which
could then never run ahead of Python. So data are checked once per dataset, before training; the loss
and correct-prediction sums accumulate on the backend; and values are read only at reporting points,
a few times a second at most (``report_interval``) and at the end of each epoch. Those points are also
where divergence is caught: if the loss or the weights became NaN or Inf, the weights, buffers and
optimizer state of the last good reporting point are put back and :class:`TrainingDivergedError` is
raised. Everything else (progress bars, epoch lines, files, checkpoints, Ctrl-C, early stopping) is a
callback (:mod:`backprop.callbacks`).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

import numpy as np

from backprop.backends import Array
from backprop.callbacks import Callback, CallbackList, EpochLine, ProgressBar
from backprop.checks import check_labels, check_number
from backprop.data.loader import DataLoader
from backprop.distributed import Communicator, GradientAverager, broadcast_arrays, check_shares
from backprop.graphs import CudaGraphStep
from backprop.layers.base import Layer
from backprop.layers.norm import _BatchNorm
from backprop.losses import MSE, Loss, targets_checked
from backprop.metrics import correct_count
from backprop.optim import Optimizer
from backprop.schedules import LRScheduler

METRICS = ("accuracy",)
EVAL_BATCH = 1000
REPORT_INTERVAL = 0.5  # seconds between reporting points within an epoch, unless fit is told otherwise


class TrainingDivergedError(FloatingPointError):
    """The loss or the weights became NaN or Inf; the model holds the weights, buffers and optimizer
    state of the last reporting point at which both were finite."""


def train_step(model: Layer, loss: Loss, optimizer: Optimizer, x: Array, y: Array,
               average: Callable[[], None] | None = None) -> tuple[Array, Array]:
    """One training step: forward, loss, backward (parameter gradients only), ``average`` (data-parallel
    training: the gradients averaged over the ranks, :mod:`backprop.distributed`), update (with the
    optimizer's gradient clipping, if any). Returns the loss as a 0-d backend array (reading it waits
    for the device) and the outputs."""
    optimizer.begin_step()
    return device_step(model, loss, optimizer, x, y, average)


def device_step(model: Layer, loss: Loss, optimizer: Optimizer, x: Array, y: Array,
                average: Callable[[], None] | None = None) -> tuple[Array, Array]:
    """:func:`train_step` without the optimizer's host half (``begin_step``): only device work, which a
    CUDA graph captures (:mod:`backprop.graphs`). Running out of GPU memory anywhere in it is a
    ``GPUOutOfMemoryError`` naming the request and the free memory."""
    with model.backend.guard(f"a training step on a batch of {tuple(x.shape)}"):
        out = model.forward(x)
        value = loss.forward(out, y)
        model.backward_params(loss.backward())
        if average is not None:
            average()
        optimizer.apply()
    return value, out


# -- metrics, kept on the device ----------------------------------------------------------------------
class RunningSums:
    """The sum of batch loss x batch size and the count of correct predictions, as one float64 pair on
    the backend: adding to them queues device work and never waits; :meth:`read` is one host read.
    (float64 holds counts exactly and adds the float32 losses as a host loop over floats would.)"""

    def __init__(self, backend: Any, loss_sum: float = 0.0, correct: int = 0, accuracy: bool = False,
                 loss: Loss | None = None) -> None:
        self.backend = backend
        self.sums = backend.xp.asarray([loss_sum, correct], dtype=np.float64)
        self.accuracy, self.loss = accuracy, loss  # the loss counts its outputs' correct predictions
        self.per_sample = 1  # accuracy's counted values per sample (every output value, with a threshold)

    def add(self, value: Array | None, out: Array, target: Array) -> None:
        loss_sum, correct = self.sums[:1], self.sums[1:]  # views, added to in place (no copy back)
        if value is not None:
            loss_sum += value.astype(np.float64) * len(out)
        if self.accuracy:
            hits, total = correct_count(out, target) if self.loss is None else self.loss.correct(out, target)
            correct += hits
            self.per_sample = total // max(1, len(out))

    def read(self) -> tuple[float, int]:
        loss_sum, correct = self.backend.to_numpy(self.sums).tolist()
        return loss_sum, int(correct)


# -- checks, once per dataset -------------------------------------------------------------------------
def _module(backend: Any, a: Array) -> Any:
    return backend.xp if backend.is_array(a) else np


def _check_dataset(model: Layer, loss: Loss | None, loader: DataLoader, what: str, accuracy: bool = False) -> None:
    """Refuse data that would fail or poison training, before any update: NaN/Inf, and targets against
    the loss (or, without one, against ``accuracy``'s needs). The only host reads of a dataset."""
    backend = model.backend
    for name, a in (("x", loader.x), ("y", loader.y)):
        if a is not None and a.dtype.kind == "f":
            if not bool(_module(backend, a).isfinite(a).all()):
                host = backend.to_numpy(a) if backend.is_array(a) else a
                bad = np.argwhere(~np.isfinite(host))[0]
                raise ValueError(f"{what}: {name} holds NaN or Inf (first at index {tuple(int(i) for i in bad)})")
    if loss is None and not accuracy:
        return
    if loader.y is None:
        raise ValueError(f"{what}: no targets y")
    with _mode(model, False):
        out_shape = (len(loader.x), *model.forward(loader.head(1)[0]).shape[1:])
    targets = loader.targets()
    if loss is not None:
        loss.check_target(out_shape, targets)
        loss.check_target_values(out_shape, targets)
    else:
        _check_class_targets(out_shape, targets, what)


def _check_class_targets(out_shape: tuple[int, ...], y: Array, what: str) -> None:
    """Targets accuracy can be counted against: for (N, K>1) outputs, integer labels (N,) in [0, K) or
    rows (N, K); for other outputs, one target per output value."""
    if len(out_shape) == 2 and out_shape[1] > 1:
        k = out_shape[1]
        if y.ndim == 1 and y.dtype.kind in "iu":
            check_labels(y, k, what)
        elif not (y.ndim == 2 and y.shape[1] == k):
            raise ValueError(f"{what}: targets of shape {tuple(y.shape)} {y.dtype} fit neither integer labels "
                             f"({out_shape[0]},) nor rows ({out_shape[0]}, {k}) for outputs {out_shape}")
    elif y.size != math.prod(out_shape):
        raise ValueError(f"{what}: targets of shape {tuple(y.shape)} do not fit outputs {out_shape}")


def _check_metrics(metrics: Sequence[str]) -> None:
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a sequence of names, such as ({metrics!r},), got the string {metrics!r}")
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}: choose from {METRICS}")


def _check_optimizer(model: Layer, optimizer: Optimizer) -> None:
    mine = {id(p) for p in model.parameters()}
    if not any(id(p) in mine for p in optimizer.params):
        raise ValueError("the optimizer holds none of this model's parameters, so training would change "
                         "nothing: build it with model.parameters()")


def _check_last_batch(model: Layer, loader: DataLoader, ranks: int = 1) -> None:
    """A BatchNorm cannot normalize a last batch of one sample (its variance is undefined) unless it
    also averages over pixels (BatchNorm2D on maps larger than 1x1); over several ``ranks``, nor a
    rank's part of one sample of any batch."""
    n, b = len(loader.x), loader.batch_size
    last = n % b if b < n and not loader.drop_last else 0
    if b > 1 and (last or b) // ranks == 1:
        # (_check_dataset's probe forward left each BatchNorm's input shape)
        lonely = [type(m).__name__ for m in model.modules() if isinstance(m, _BatchNorm)
                  and math.prod(getattr(m, "input_shape", (1, 1))[2:]) < 2]
        if lonely:
            over, what = (f" over {ranks} ranks", "a part") if ranks > 1 else ("", "a last batch")
            raise ValueError(f"{n} samples in batches of {b}{over} leave {what} of one sample, which {lonely[0]} "
                             "cannot normalize: choose another batch_size")


def as_loader(model: Layer, x: Array, y: Array = None, *, batch_size: int | None, shuffle: bool = False,
              seed: int | None = None, resident: bool | None = None) -> DataLoader:
    """``x`` itself when it is a DataLoader (on the model's backend), else a loader over (x, y).

    Data stay on the backend for the whole run (``resident``) when they fit, which is always on the
    CPU; arrays already on the backend are never copied back to the host."""
    backend = model.backend
    if isinstance(x, DataLoader):
        if y is not None:
            raise ValueError("give targets inside the DataLoader, not as y as well")
        if x.backend is not None and x.backend is not backend:
            raise ValueError(f"the DataLoader feeds the {x.backend!r} backend, the model is on {backend!r}: build "
                             "it with backend=model.backend")
        if x.backend is None:
            raise ValueError("the DataLoader has no backend: build it with backend=model.backend")
        return x
    on_device = backend.is_array(x)
    x = x if on_device else np.asarray(x)
    if y is not None and not backend.is_array(y):
        y = np.asarray(y)
    if resident is None:
        resident = on_device or backend.can_hold(x.nbytes + (0 if y is None else y.nbytes))
    return DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, backend=backend,
                      resident=bool(resident))


@contextmanager
def _mode(model: Layer, training: bool) -> Iterator[None]:
    """``model`` in training or inference mode inside the block; afterwards every layer gets back its own
    mode (a BatchNorm frozen with ``model[i].eval()`` stays frozen)."""
    before = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        model.train(before[0][1])  # through any train() override that passes the mode on
        for m, mode in before:
            m.training = mode


# -- snapshots, for divergence and early stopping -----------------------------------------------------
class Snapshot:
    """Copies of a model's weights and buffers and of its optimizer's state and step count, taken at a
    point known to be good and put back on demand. Copies stay on the backend and are reused."""

    def __init__(self, model: Layer, optimizer: Optimizer | None = None) -> None:
        self.model, self.optimizer = model, optimizer
        self.saved: dict[str, Any] = {}
        self.steps = 0

    def _model_arrays(self) -> dict[str, Any]:
        return {**{f"param/{i}": p.data for i, p in enumerate(self.model.parameters())},
                **{f"buffer/{k}": v for k, v in self.model.named_buffers().items()}}

    def arrays(self) -> dict[str, Any]:
        """The model's weights and buffers and the optimizer's state arrays, by name."""
        arrays = self._model_arrays()
        if self.optimizer is not None:
            arrays.update({f"optim/{i}/{k}": v for i, p in enumerate(self.optimizer.params)
                           for k, v in p.state.items()})
        return arrays

    def take(self) -> None:
        saved = {}
        for name, a in self.arrays().items():
            copy = self.saved.get(name)
            if copy is None or copy.shape != a.shape or copy.dtype != a.dtype:
                copy = a.copy()
            else:
                copy[...] = a
            saved[name] = copy
        self.saved = saved
        self.steps = self.optimizer.steps if self.optimizer is not None else 0

    def restore(self) -> None:
        for name, a in self.arrays().items():
            if name in self.saved:
                a[...] = self.saved[name]
            else:  # optimizer state first made after the snapshot: back to not existing
                _, i, key = name.split("/")
                del self.optimizer.params[int(i)].state[key]  # type: ignore[union-attr]
        if self.optimizer is not None:
            self.optimizer.steps = self.steps

    def finite(self) -> bool:
        """Whether every weight, buffer and optimizer state array is finite now (one host read)."""
        xp = self.model.backend.xp
        arrays = [a for a in self.arrays().values() if a.size]
        return not arrays or bool(xp.stack([xp.isfinite(a).all() for a in arrays]).all())


# -- the loop -------------------------------------------------------------------------------------------
@dataclass
class TrainingState:
    """Where training stands, as much as resuming it exactly needs besides weights and generators."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch finished
    loss_sum: float = 0.0  # this epoch's sum of batch loss x batch size, as of the last reporting point
    correct: int = 0  # this epoch's correct predictions, likewise
    seen: int = 0  # this epoch's samples trained on
    seconds: float = 0.0  # this epoch's training time before a stop
    order: np.ndarray | None = None  # this epoch's sample order
    history: list[dict[str, float]] = field(default_factory=list)  # one record per finished epoch

    COUNTERS = ("epoch", "batch", "loss_sum", "correct", "seen", "seconds")

    def counters(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.COUNTERS}


@dataclass
class Loop:
    """What callbacks see: the objects being trained and where training stands."""

    model: Layer
    loss: Loss
    optimizer: Optimizer
    loader: DataLoader
    epochs: int
    state: TrainingState
    stop_training: bool = False
    error: BaseException | None = None  # what ended training, for on_train_end; None when it finished
    graph: CudaGraphStep | None = None  # the captured step with fit(cuda_graph=True): its replays, eager steps

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def batch(self) -> int:
        return self.state.batch

    @property
    def batches_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def history(self) -> list[dict[str, float]]:
        return self.state.history


def fit(model: Layer, x: Array, y: Array = None, *, loss: Loss, optimizer: Optimizer, epochs: int = 1,
        batch_size: int | None = None, shuffle: bool = True, seed: int | None = None,
        validation_data: tuple[Array, Array] | DataLoader | None = None, scheduler: LRScheduler | None = None,
        metrics: Sequence[str] = (), progress: bool = True, callbacks: Sequence[Callback] = (),
        resident: bool | None = None, state: TrainingState | None = None,
        report_interval: float | None = None, cuda_graph: bool = False,
        comm: Communicator | None = None) -> dict[str, list[float]]:
    """Train ``model`` for ``epochs`` passes over (x, y), or over the DataLoader ``x``; return the history.

    ``batch_size=None`` trains on the full batch, 1 is single-sample SGD, anything between is
    mini-batch. Shuffling is seeded by ``seed`` (else by :func:`~backprop.manual_seed`). ``scheduler`` is
    stepped after every epoch. Data stay on the backend for the whole run when they fit (``resident``).
    ``progress`` adds a progress bar and a line per epoch to ``callbacks``. ``state`` resumes a loop
    where a checkpoint left it. ``cuda_graph=True`` (cupy backend) captures the training step as a CUDA
    graph after a few eager steps and replays it for every full batch (:mod:`backprop.graphs`); the
    results equal eager training's. The history maps "loss", each metric, and with ``validation_data``
    "val_loss" and "val_<metric>" to one value per epoch (callbacks also see "lr", "seconds",
    "images_per_s", "warmup_seconds" and "eval_seconds" in each epoch's record: the warm-up, the first step
    where kernels compile or with ``cuda_graph`` the steps up to the capture, is timed apart as "warmup_seconds"
    and kept out of "images_per_s").

    Values are read from the device only at reporting points (every ``report_interval`` seconds,
    default :data:`REPORT_INTERVAL`, and at each epoch's end); a NaN or Inf loss, weight or optimizer
    state found there raises :class:`TrainingDivergedError` after putting back the weights, buffers,
    optimizer state and ``state`` of the last good reporting point.

    ``comm`` (from :func:`backprop.distributed.init`) trains data-parallel over its ranks: each rank
    runs this with the same arguments, trains on its part of every batch (``batch_size`` is the global
    batch, a multiple of the ranks) and averages the gradients before each update; rank 0's weights,
    buffers, optimizer state and shuffling generator are given to every rank first. Losses and metrics
    are over all ranks; BatchNorm's running statistics stay each rank's own.
    """
    backend = model.backend
    if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    report_interval = check_number(REPORT_INTERVAL if report_interval is None else report_interval,
                                   "report_interval", lambda v: v >= 0, "finite and >= 0")
    _check_metrics(metrics)
    _check_optimizer(model, optimizer)
    loss.to(backend)
    comm = comm or Communicator()
    if cuda_graph and comm.size > 1:
        raise ValueError(f"cuda_graph=True trains one process; this is rank {comm.rank} of {comm.size}: train "
                         "data-parallel without it")

    if seed is None and shuffle and not isinstance(x, DataLoader):  # the order follows manual_seed, as in PyTorch
        seed = backend.draw_seed()
    loader = as_loader(model, x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, resident=resident)
    if len(loader) == 0:
        raise ValueError(f"training data: {len(loader.x)} samples in batches of {loader.batch_size} with drop_last "
                         "give no batch")
    _check_dataset(model, loss, loader, "training data")
    val_loader = None
    if validation_data is not None:
        val_loader = as_loader(model, *((validation_data,) if isinstance(validation_data, DataLoader)
                                        else validation_data), batch_size=EVAL_BATCH, resident=resident)
        _check_dataset(model, loss, val_loader, "validation data")
    _check_last_batch(model, loader, comm.size)
    if comm.size > 1:
        check_shares(comm.size, len(loader.x), loader.batch_size)
        loader.load_state_dict(comm.broadcast_json(loader.state_dict()))  # one global order for every rank
    step = CudaGraphStep(device_step, model, loss, optimizer, loader.batch_size) if cuda_graph else None
    loop = Loop(model, loss, optimizer, loader, int(epochs), state or TrainingState(), graph=step)
    hooks = CallbackList([*callbacks, *((ProgressBar(), EpochLine()) if progress else ())])
    runner = _Runner(loop, hooks, val_loader, scheduler, metrics, report_interval, comm)
    with _mode(model, True), targets_checked(loss), (step.running() if step else nullcontext()):
        if comm.size > 1:
            broadcast_arrays(comm.array_comm(backend), list(runner.snapshot.arrays().values()))
        if not runner.snapshot.finite():
            raise ValueError("the model's weights or buffers, or its optimizer's state, hold NaN or Inf before "
                             "training")
        runner.mark_good("the start of training")
        try:
            hooks.on_train_begin(loop)
            while loop.state.epoch < loop.epochs and not loop.stop_training:
                runner.epoch()
        except BaseException as exc:
            loop.error = exc
            raise
        finally:
            hooks.on_train_end(loop)
    keys = ["loss", *metrics, *(f"val_{k}" for k in ("loss", *metrics) if val_loader is not None)]
    return {k: [row[k] for row in loop.history] for k in keys}


class _Runner:
    """One epoch at a time of :func:`fit`'s loop, with its reporting points."""

    def __init__(self, loop: Loop, hooks: Callback, val_loader: DataLoader | None, scheduler: LRScheduler | None,
                 metrics: Sequence[str], report_interval: float, comm: Communicator) -> None:
        self.loop, self.hooks, self.val_loader, self.scheduler = loop, hooks, val_loader, scheduler
        model, loss, optimizer = loop.model, loop.loss, loop.optimizer
        self.step = loop.graph or (lambda x, y: train_step(model, loss, optimizer, x, y))
        self.metrics, self.report_interval, self.comm = tuple(metrics), report_interval, comm
        self.gradients = GradientAverager(comm, optimizer.params) if comm.size > 1 else None
        self.snapshot = Snapshot(loop.model, loop.optimizer)
        self.good = ""  # where the snapshot was taken
        self.good_state = loop.state
        self.warmed_up = False  # whether this fit is past its warm-up: the first step, where kernels compile
        # (Numba, CUDA), or with a CUDA graph the steps up to its capture

    def mark_good(self, where: str) -> None:
        """The model, optimizer and loop position now are known to be good: keep copies."""
        self.snapshot.take()
        self.good = where
        self.keep_state()

    def keep_state(self) -> None:
        self.good_state = replace(self.loop.state, history=list(self.loop.state.history))

    def epoch(self) -> None:
        loop, st, backend = self.loop, self.loop.state, self.loop.model.backend
        if st.batch == 0:
            st.order = loop.loader.order()
        comm = self.comm
        base = (st.loss_sum, st.correct) if comm.rank == 0 else (0.0, 0)  # (the sums add over the ranks)
        sums = RunningSums(backend, *base, "accuracy" in self.metrics, loop.loss)
        self.hooks.on_epoch_begin(loop)
        start = time.perf_counter()
        next_report = start + self.report_interval
        warmup = (0, 0.0)  # (images, seconds) of this epoch's warm-up steps, kept out of images/s
        for xb, yb in loop.loader.batches(st.order, st.batch, (comm.rank, comm.size)):
            self.hooks.on_batch_begin(loop)
            samples = loop.loader.batch_len(st.batch)  # on all ranks
            step_start = time.perf_counter()
            if self.gradients is None:
                value, out = self.step(xb, yb)
            else:
                average = partial(self.gradients.average, len(xb) / samples)
                value, out = train_step(loop.model, loop.loss, loop.optimizer, xb, yb, average)
            if not self.warmed_up:
                backend.synchronize()
                warmup = (warmup[0] + samples, warmup[1] + time.perf_counter() - step_start)
                self.warmed_up = loop.graph is None or not loop.graph.warming_up
            sums.add(value, out, yb)
            st.batch += 1
            st.seen += samples
            self.hooks.on_batch_end(loop)
            loop.stop_training, due = comm.any(loop.stop_training, time.perf_counter() >= next_report)
            if loop.stop_training or due:
                self.report(sums)
                next_report = time.perf_counter() + self.report_interval
            if loop.stop_training:
                break
        backend.synchronize()
        seconds = st.seconds + time.perf_counter() - start
        if st.batch < len(loop.loader):  # stopped mid-epoch, at a reporting point
            st.seconds = seconds
            return
        self.report(sums)
        logs = {"loss": st.loss_sum / st.seen}
        if "accuracy" in self.metrics:
            logs["accuracy"] = st.correct / (st.seen * sums.per_sample)
        if self.val_loader is not None:
            t = time.perf_counter()
            scores = _evaluate(loop.model, self.val_loader, loop.loss, self.metrics, comm=self.comm)
            if not math.isfinite(scores["loss"]):
                self.diverged(f"the validation loss became {scores['loss']} after epoch {st.epoch + 1}, whose "
                              "training loss, weights and optimizer state are finite and are kept",
                              "check the validation data's scale, or lower the learning rate")
            logs.update({f"val_{k}": v for k, v in scores.items()})
            logs["eval_seconds"] = round(time.perf_counter() - t, 3)
        if st.seen == warmup[0]:  # the whole epoch was warm-up
            warmup = (0, 0.0)
        logs.update(lr=loop.optimizer.lr, seconds=round(seconds, 3), warmup_seconds=round(warmup[1], 3),
                    images_per_s=round((st.seen - warmup[0]) / (seconds - warmup[1]), 1))
        st.history.append({"epoch": st.epoch + 1, **logs})
        st.epoch, st.batch, st.loss_sum, st.correct, st.seen = st.epoch + 1, 0, 0.0, 0, 0
        st.seconds, st.order = 0.0, None
        self.good = f"the end of epoch {st.epoch}"
        self.keep_state()
        if self.scheduler is not None:
            self.scheduler.step()
        self.hooks.on_epoch_end(loop, logs)

    def report(self, sums: RunningSums) -> None:
        """A reporting point: read the sums, check loss and weights, take a snapshot, tell the callbacks."""
        loop, st = self.loop, self.loop.state
        loss_sum, correct = sums.read()
        finite = self.snapshot.finite()
        if self.comm.size > 1:  # every rank reads, checks and decides alike
            loss_sum, total, bad = self.comm.sum(np.array([loss_sum, correct, not finite], dtype=np.float64))
            correct, finite = int(total), not bad
        where = f"epoch {st.epoch + 1}, batch {st.batch}"
        if not math.isfinite(loss_sum):
            self.diverged(f"the training loss became {loss_sum / max(1, st.seen)} at or before {where}")
        if not finite:
            self.diverged(f"the weights or the optimizer's state became NaN or Inf at or before {where}")
        st.loss_sum, st.correct = loss_sum, correct
        self.mark_good(where)
        logs = {"loss": st.loss_sum / max(1, st.seen)}
        if "accuracy" in self.metrics:
            logs["accuracy"] = st.correct / max(1, st.seen * sums.per_sample)
        self.hooks.on_report(loop, logs)

    def diverged(self, what: str, advice: str = "lower the learning rate or clip gradients (clip_norm=...)") -> None:
        """Put back the last good model, optimizer state and loop position (``fit(..., state=...)`` can go on
        from there), and raise."""
        self.snapshot.restore()
        for f in fields(TrainingState):
            setattr(self.loop.state, f.name, getattr(self.good_state, f.name))
        raise TrainingDivergedError(f"{what}: training stopped, and the model holds the weights, statistics and "
                                    f"optimizer state of {self.good}, the last point where they were checked and "
                                    f"finite; {advice}")


# -- evaluation and prediction ------------------------------------------------------------------------
def _evaluate(model: Layer, loader: DataLoader, loss: Loss | None, metrics: Sequence[str],
              confusion: bool = False, comm: Communicator | None = None) -> dict[str, Any]:
    """Scores over checked data, with one host read at the end; with ``comm``, each rank scores its
    part of every batch and the scores are over all ranks (no confusion matrix)."""
    backend = model.backend
    comm = comm or Communicator()
    sums = RunningSums(backend, accuracy="accuracy" in metrics, loss=loss)
    matrix, seen = None, 0
    guard = targets_checked(loss) if loss is not None else nullcontext()
    with _mode(model, False), guard:
        for xb, yb in loader.batches(shard=(comm.rank, comm.size)):
            if not len(xb):  # a batch with fewer samples than ranks
                continue
            out = model.forward(xb)
            sums.add(None if loss is None else loss.forward(out, yb), out, yb)
            seen += len(xb)
            if confusion:
                counts = _confusion(backend, out, yb)
                matrix = counts if matrix is None else matrix + counts
    loss_sum, correct = sums.read()
    if comm.size > 1:
        loss_sum, total, samples = comm.sum(np.array([loss_sum, correct, seen], dtype=np.float64))
        correct, seen = int(total), int(samples)
    scores: dict[str, Any] = {"loss": loss_sum / seen} if loss is not None else {}
    if "accuracy" in metrics:
        scores["accuracy"] = correct / (seen * sums.per_sample)
    if matrix is not None:
        scores["confusion"] = backend.to_numpy(matrix)
    return scores


def _confusion(backend: Any, out: Any, target: Any) -> Any:
    """The batch's (K, K) counts of true class (rows) against predicted class, as the product of the
    labels' one-hot rows (transposed) with the predictions' (no scatter, no read of the labels)."""
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(f"a confusion matrix needs class outputs (N, K>1), got {tuple(out.shape)}")
    eye = backend.xp.eye(out.shape[1], dtype=np.float64)
    labels = target if target.ndim == 1 else target.argmax(axis=1)
    return (eye[labels].T @ eye[out.argmax(axis=1)]).astype(np.int64)


def evaluate(model: Layer, x: Array, y: Array = None, *, loss: Loss | None = None, metrics: Sequence[str] | None = None,
             batch_size: int = EVAL_BATCH, confusion: bool = False) -> dict[str, Any]:
    """Mean ``loss`` (when given) and each metric over (x, y) or the DataLoader ``x``, in inference mode.

    ``metrics=None`` means accuracy, unless the loss is a regression loss (MSE): then none.
    ``confusion=True`` adds "confusion", a (K, K) int64 NumPy array: rows are true classes, columns
    predicted ones.
    """
    if metrics is None:
        metrics = () if isinstance(loss, MSE) else ("accuracy",)
    _check_metrics(metrics)
    if loss is not None:
        loss.to(model.backend)
    loader = as_loader(model, x, y, batch_size=batch_size)
    _check_dataset(model, loss, loader, "evaluation data", accuracy="accuracy" in metrics or confusion)
    return _evaluate(model, loader, loss, metrics, confusion)


def predict(model: Layer, x: Array, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Outputs for ``x`` in inference mode, batch by batch, as a host NumPy array (one read at the end)."""
    backend = model.backend
    loader = as_loader(model, x, batch_size=batch_size)
    with _mode(model, False):
        outs = [model.forward(xb) for xb, _ in loader.batches()]
    return backend.to_numpy(backend.xp.concatenate(outs))
